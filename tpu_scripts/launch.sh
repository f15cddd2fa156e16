#!/usr/bin/env bash
# Run one spark-jax command on all workers at once, in the background, logging to ~/REPO/logs.
#   tpu_scripts/launch.sh --name spark --zone us-east5-b -- train --algo ppo --config configs/llama3_1_8b_v5e_8.yaml --data gs://BUCKET/stage1 --out gs://BUCKET/runs/ppo ...
# On a TPU slice jax.distributed.initialize() finds the coordinator itself; SPARK_JAX_DISTRIBUTED=1
# tells spark-jax to call it. Paths may be gs:// URLs.
source "$(dirname "$0")/common.sh"
parse_common "$@"
[[ ${#REST[@]} -gt 0 ]] || die "give the spark-jax command after --, e.g. -- train --algo ppo ..."
args=$(printf '%q ' "${REST[@]}")
ssh_all "cd ~/$REPO_DIR && mkdir -p logs && SPARK_JAX_DISTRIBUTED=1 nohup .venv/bin/spark-jax ${args% } > logs/run-\$(hostname).log 2>&1 < /dev/null &"
