# Shared by the tpu_scripts: flag parsing, gcloud invocation, and --dry-run.
# Every gcloud command goes through `run`, which prints it (shell-quoted) under --dry-run instead
# of executing it, so the dry-run output is exactly what would run.
set -euo pipefail

TPU_NAME="${TPU_NAME:-spark-jax}"
ZONE="${ZONE:-us-central2-b}"
PROJECT="${PROJECT:-}"
ACCELERATOR="${ACCELERATOR:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-}"
DRY_RUN=0
SPOT=0
QUEUED=0
VALID_FOR=""
REPO_DIR="${REPO_DIR:-spark-jax}"

die() { echo "error: $*" >&2; exit 2; }

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

# The TPU software version that matches an accelerator generation.
default_runtime() {
  case "$1" in
    v4-*) echo "tpu-ubuntu2204-base" ;;
    v5litepod-*|v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    *) die "unknown accelerator type '$1' (expected v4-N, v5litepod-N, v5p-N or v6e-N)" ;;
  esac
}

project_flag() { [[ -n "$PROJECT" ]] && echo "--project=$PROJECT" || true; }

# Parses the flags every script shares; the rest is left in REST.
parse_common() {
  REST=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name) TPU_NAME="$2"; shift 2 ;;
      --zone) ZONE="$2"; shift 2 ;;
      --project) PROJECT="$2"; shift 2 ;;
      --accelerator) ACCELERATOR="$2"; shift 2 ;;
      --runtime-version) RUNTIME_VERSION="$2"; shift 2 ;;
      --spot) SPOT=1; shift ;;
      --queued) QUEUED=1; shift ;;
      --valid-for) VALID_FOR="$2"; shift 2 ;;
      --repo-dir) REPO_DIR="$2"; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      --) shift; REST+=("$@"); break ;;
      *) REST+=("$1"); shift ;;
    esac
  done
  [[ "$TPU_NAME" =~ ^[a-z][-a-z0-9]*$ ]] || die "--name '$TPU_NAME' must be lower-case letters, digits and dashes"
  [[ -n "$ZONE" ]] || die "--zone is required"
  RUNTIME_VERSION="${RUNTIME_VERSION:-$(default_runtime "$ACCELERATOR")}"
}

ssh_all() {
  # One command on every worker of the slice, at once.
  local cmd="$1"
  local pf; pf=$(project_flag)
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" ${pf:+"$pf"} --worker=all --command="$cmd"
}
