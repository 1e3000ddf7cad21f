#!/usr/bin/env bash
# Benchmark: `drbuild plan` over 10,000 generated Dockerfiles (ARG versions, multi-stage)
# against `grep -rh '^FROM'` over the same tree, in the same run. Prints the ratio.
# grep's answer is wrong (unresolved ${ARG}s, stage aliases); drbuild's is checked below.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
n=${N:-10000}
runs=${RUNS:-10}
tree=${TREE:-$(mktemp -d)/tree}

cargo build --release -q -p docker-resilience-cli --manifest-path "$repo/Cargo.toml"
drbuild="${CARGO_TARGET_DIR:-$repo/target}/release/drbuild"
python3 "$here/gen_tree.py" "$tree" "$n"

images=$("$drbuild" plan "$tree" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d["images"]), len(d["warnings"]))')
echo "tree: $n Dockerfiles; drbuild plan found (images, warnings): $images"
echo "grep's distinct FROM lines: $(grep -rh '^FROM' "$tree" | sort -u | wc -l) (unresolved \${…} and stage names included)"
python3 "$here/paired.py" "$runs" "$drbuild plan $tree --json" "grep -rh '^FROM' $tree"
