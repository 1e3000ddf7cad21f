#!/usr/bin/env bash
# Benchmark: `drbuild plan` over 10,000 generated Dockerfiles (ARG versions, multi-stage)
# against the shell pipeline users paste, `grep -rh '^FROM' | sort -u`, over the same
# tree, pair by pair in the same run. Prints the ratio and checks it against the
# recorded baseline (plan.baseline): a median ratio more than 20% above it is a
# regression (exit 1). grep's answer is wrong (unresolved ${ARG}s, stage aliases);
# drbuild's is checked below.
#
# Settings: N (Dockerfiles, default 10000), RUNS (pairs, default 15), TREE (where to
# generate it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
n=${N:-10000}
runs=${RUNS:-15}
tree=${TREE:-$(mktemp -d)/tree}

cargo build --release -q -p docker-resilience-cli --manifest-path "$repo/Cargo.toml"
drbuild="${CARGO_TARGET_DIR:-$repo/target}/release/drbuild"
python3 "$here/gen_tree.py" "$tree" "$n"
# The tree just written is still being written back: on 2 cores the flusher takes a
# core from whichever command runs first.
sync

images=$("$drbuild" plan "$tree" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["images"]), len(d["warnings"]))')
echo "tree: $n Dockerfiles; drbuild plan found (images, warnings): $images"
echo "grep's distinct FROM lines: $(grep -rh '^FROM' "$tree" | sort -u | wc -l) (unresolved \${…} and stage names included)"
report=$(python3 "$here/paired.py" "$runs" "$drbuild plan $tree --json" "grep -rh '^FROM' $tree | sort -u")
echo "$report"
ratio=$(echo "$report" | sed -n 's/^A\/B median ratio \([0-9.]*\).*/\1/p')
[ "$n" = 10000 ] || exit 0
baseline=$(sed -n 's/^ratio \([0-9.]*\).*/\1/p' "$here/plan.baseline")
if python3 -c "import sys; sys.exit(0 if $ratio <= $baseline * 1.2 else 1)"; then
  echo "within the baseline: $ratio against $baseline (plan.baseline)"
else
  echo "REGRESSION: $ratio against the baseline $baseline (plan.baseline)" >&2
  exit 1
fi
