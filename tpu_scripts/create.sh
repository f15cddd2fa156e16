#!/usr/bin/env bash
# Create a TPU VM or multi-host slice.
#   tpu_scripts/create.sh --name spark --zone us-east5-b --accelerator v5litepod-8 [--spot] [--queued [--valid-for 6h]] [--dry-run]
# --queued asks through queued resources (waits for capacity); --spot uses preemptible capacity.
source "$(dirname "$0")/common.sh"
parse_common "$@"
[[ ${#REST[@]} -eq 0 ]] || die "unexpected arguments: ${REST[*]}"
pf=$(project_flag)
if [[ "$QUEUED" == 1 ]]; then
  extra=()
  [[ "$SPOT" == 1 ]] && extra+=(--spot)
  [[ -n "$VALID_FOR" ]] && extra+=(--valid-until-duration="$VALID_FOR")
  run gcloud compute tpus queued-resources create "$TPU_NAME-qr" --node-id="$TPU_NAME" --zone="$ZONE" \
    ${pf:+"$pf"} --accelerator-type="$ACCELERATOR" --runtime-version="$RUNTIME_VERSION" ${extra[@]+"${extra[@]}"}
  run gcloud compute tpus queued-resources describe "$TPU_NAME-qr" --zone="$ZONE" ${pf:+"$pf"} --format='value(state.state)'
else
  extra=()
  [[ "$SPOT" == 1 ]] && extra+=(--spot)
  run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" ${pf:+"$pf"} \
    --accelerator-type="$ACCELERATOR" --version="$RUNTIME_VERSION" ${extra[@]+"${extra[@]}"}
fi
