#!/usr/bin/env bash
# Stream the log of worker 0 (or --worker N) of the running job.
#   tpu_scripts/logs.sh --name spark --zone us-east5-b [--worker 0] [--dry-run]
source "$(dirname "$0")/common.sh"
worker=0
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in --worker) worker="$2"; shift 2 ;; *) args+=("$1"); shift ;; esac
done
parse_common ${args[@]+"${args[@]}"}
[[ ${#REST[@]} -eq 0 ]] || die "unexpected arguments: ${REST[*]}"
pf=$(project_flag)
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" ${pf:+"$pf"} --worker="$worker" \
  --command="tail -n 200 -F ~/$REPO_DIR/logs/run-*.log"
