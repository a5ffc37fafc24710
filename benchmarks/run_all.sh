#!/usr/bin/env bash
# Run every benchmark with its default (full) sizes; results: benchmarks/RESULTS.md.
# Each script prints the project beside its baseline, measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
for b in benchmarks/bench_*.py; do
  printf '\n### %s\n' "$b"
  python "$b" "$@"
done
