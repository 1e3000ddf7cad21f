#!/usr/bin/env bash
# Prefetch benchmarks on the local test bed (scripts/testbed), 13 images, each in one run:
#   1. no-op (all present): drbuild prefetch vs the bash baseline (seed 002)  target <= 0.2x
#   2. cold, no faults: drbuild prefetch --jobs 4 vs `xargs -P4 docker pull`   target <= 1.1x
#      (both commands first remove the 13 images, so both ratios include that equal cost)
#   3. success rate under 30% manifest faults (EOF/500/429), 10 seeded runs each:
#      drbuild vs the baseline (with its real `sleep 5`/`sleep 10`).
# Settings: RUNS (default 10) for 1 and 2; FAULT_RUNS (default 10) for 3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
runs=${RUNS:-10}
fault_runs=${FAULT_RUNS:-10}

"$repo/scripts/testbed" up
# shellcheck disable=SC1090
source <("$repo/scripts/testbed" env)
cargo build --release -q -p docker-resilience-cli --manifest-path "$repo/Cargo.toml"
drbuild="$repo/target/release/drbuild"
cargo build -q -p docker-resilience-tests --bin faultproxy --manifest-path "$repo/Cargo.toml"
faultproxy="${CARGO_TARGET_DIR:-$repo/target}/debug/faultproxy" # its presets are the tests' faults
docker=$DRBUILD_TESTBED_DOCKER # the client that matches the test bed's engine
export DOCKER=$docker

images=(ubuntu:22.04 nginx:stable nginx:stable-alpine node:18-alpine golang:1.21-alpine golang:1.20-alpine
  postgres:15-alpine redis:7-alpine python:3.11-slim alpine:latest alpine:3.18 busybox:1.36 debian:bookworm-slim)
tree=$(mktemp -d)
for i in "${!images[@]}"; do
  mkdir -p "$tree/svc$i"
  printf 'FROM %s\nRUN true\n' "${images[$i]}" >"$tree/svc$i/Dockerfile"
done
proxy="http://$DRBUILD_TESTBED_PROXY/__faultproxy"
rmi="$docker rmi -f ${images[*]} >/dev/null 2>&1 || true"
curl -fsS -XPOST "$proxy/reset" >/dev/null

echo "== 1. no-op prefetch (all present)"
"$drbuild" prefetch "$tree" -q >/dev/null
python3 "$here/paired.py" "$runs" "$drbuild prefetch $tree -q" "$here/baseline-prefetch.sh $tree"

echo "== 2. cold prefetch, no faults, 4 at a time"
python3 "$here/paired.py" "$runs" \
  "$rmi; $drbuild prefetch $tree -q --jobs 4" \
  "$rmi; printf '%s\n' ${images[*]} | xargs -P4 -n1 $docker pull -q"

echo "== 3. success rate under 30% manifest faults, $fault_runs seeded runs"
faults() {
  curl -fsS -XPOST "$proxy/reset" >/dev/null
  curl -fsS -XPOST "$proxy/config" -d "$("$faultproxy" preset manifest-faults --seed "$1" --probability 0.3)" >/dev/null
}
d_ok=0 b_ok=0 d_images=0 b_images=0 d_time=0 b_time=0
for seed in $(seq "$fault_runs"); do
  eval "$rmi"; faults "$seed"
  start=$(date +%s%N)
  if out=$("$drbuild" prefetch "$tree" --json 2>/dev/null); then d_ok=$((d_ok + 1)); fi
  d_time=$((d_time + ($(date +%s%N) - start) / 1000000))
  d_images=$((d_images + $(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["pulled"])')))
  eval "$rmi"; faults "$seed"
  start=$(date +%s%N)
  if out=$("$here/baseline-prefetch.sh" "$tree" 2>/dev/null); then b_ok=$((b_ok + 1)); fi
  b_time=$((b_time + ($(date +%s%N) - start) / 1000000))
  b_images=$((b_images + $(echo "$out" | tail -1 | awk '{print $2}')))
done
curl -fsS -XPOST "$proxy/reset" >/dev/null
total=$((fault_runs * ${#images[@]}))
echo "drbuild:  $d_ok/$fault_runs runs complete, $d_images/$total images, $((d_time / 1000)) s in all"
echo "baseline: $b_ok/$fault_runs runs complete, $b_images/$total images, $((b_time / 1000)) s in all"
rm -rf "$tree"
