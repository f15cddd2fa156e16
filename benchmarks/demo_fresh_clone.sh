#!/usr/bin/env bash
# `make demo` as a new user runs it: a fresh clone, empty pip and spark-jax (XLA, GGUF) caches, the
# set-up included, timed with /usr/bin/time -v. Run it on an idle machine: the load before and after,
# and vmstat every 10 s, are kept beside the timing so a reader can check that it was idle.
#
#   benchmarks/demo_fresh_clone.sh [COMMIT] [OUT_DIR]     (defaults: HEAD, runs/demo-fresh-clone)
#
# OUT_DIR gets make_demo_time.txt, make_demo.log, load.txt, vmstat_10s.txt and the demo's report.md
# and plots; the clone and its caches are deleted afterwards.
set -uo pipefail
repo=$(git rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse --short "${1:-HEAD}") || { echo "unknown commit ${1:-HEAD}" >&2; exit 2; }
out=$(realpath -m "${2:-$repo/runs/demo-fresh-clone}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
git clone -q "$repo" "$work/spark-jax" && git -C "$work/spark-jax" checkout -q "$commit" || exit 2
export PIP_CACHE_DIR="$work/pip-cache" SPARK_JAX_CACHE="$work/spark-jax-cache"
{ echo "commit $commit"; echo "before: $(uptime)"; } > "$out/load.txt"
vmstat -t 10 > "$out/vmstat_10s.txt" &
vmstat_pid=$!
(cd "$work/spark-jax" && /usr/bin/time -v -o "$out/make_demo_time.txt" make demo) > "$out/make_demo.log" 2>&1
status=$?
kill "$vmstat_pid"
echo "after: $(uptime)" >> "$out/load.txt"
cp "$work/spark-jax/runs/demo/report/"*.md "$work/spark-jax/runs/demo/report/"*.png "$out/" 2>/dev/null
echo "make demo at $commit: exit $status, $(grep 'Elapsed (wall clock)' "$out/make_demo_time.txt")" | tee -a "$out/load.txt"
exit "$status"
