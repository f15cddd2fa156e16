#!/usr/bin/env bash
# Delete the TPU VM (and its queued resource, if it was created with --queued).
#   tpu_scripts/teardown.sh --name spark --zone us-east5-b [--queued] [--dry-run]
source "$(dirname "$0")/common.sh"
parse_common "$@"
[[ ${#REST[@]} -eq 0 ]] || die "unexpected arguments: ${REST[*]}"
pf=$(project_flag)
if [[ "$QUEUED" == 1 ]]; then
  run gcloud compute tpus queued-resources delete "$TPU_NAME-qr" --zone="$ZONE" ${pf:+"$pf"} --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" ${pf:+"$pf"} --quiet
fi
