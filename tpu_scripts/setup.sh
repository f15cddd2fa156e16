#!/usr/bin/env bash
# Copy this checkout to every worker and install it with jax[tpu].
#   tpu_scripts/setup.sh --name spark --zone us-east5-b [--dry-run]
source "$(dirname "$0")/common.sh"
parse_common "$@"
[[ ${#REST[@]} -eq 0 ]] || die "unexpected arguments: ${REST[*]}"
root="$(cd "$(dirname "$0")/.." && pwd)"
archive="/tmp/spark-jax-src.tar.gz"
pf=$(project_flag)
run git -C "$root" archive --format=tar.gz -o "$archive" HEAD
run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:/tmp/spark-jax-src.tar.gz" --zone="$ZONE" ${pf:+"$pf"} --worker=all
ssh_all "set -e; mkdir -p ~/$REPO_DIR && tar -xzf /tmp/spark-jax-src.tar.gz -C ~/$REPO_DIR && cd ~/$REPO_DIR && python3 -m venv .venv && .venv/bin/pip install -q -U pip && .venv/bin/pip install -q -e '.[tpu]' && .venv/bin/python -c 'import jax; print(jax.process_index(), jax.device_count())'"
