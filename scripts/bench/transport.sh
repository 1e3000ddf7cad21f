#!/usr/bin/env bash
# The transport under faults on every request, on the local test bed (scripts/testbed),
# registry-native, 13 images, 4 at a time, a fresh cache for each run:
#   1. no faults: RUNS cold runs, the baseline's median
#   2. 30% of manifest and blob requests fail (EOF, 500, a body cut half-way),
#      SEEDS_30 seeded runs: target every run complete, median <= 1.5x the baseline's
#   3. the same at 50%, SEEDS_50 seeded runs: target every run complete
# Settings: RUNS (default 10), SEEDS_30 (default 50), SEEDS_50 (default 20),
# DRBUILD_TESTBED_ENGINE (the test bed's engine).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
runs=${RUNS:-10}
seeds_30=${SEEDS_30:-50}
seeds_50=${SEEDS_50:-20}

"$repo/scripts/testbed" up
# shellcheck disable=SC1090
source <("$repo/scripts/testbed" env)
cargo build --release -q -p docker-resilience-cli --manifest-path "$repo/Cargo.toml"
drbuild="${CARGO_TARGET_DIR:-$repo/target}/release/drbuild"
cargo build -q -p docker-resilience-tests --bin faultproxy --manifest-path "$repo/Cargo.toml"
faultproxy="${CARGO_TARGET_DIR:-$repo/target}/debug/faultproxy"
docker=$DRBUILD_TESTBED_DOCKER
images=(ubuntu:22.04 nginx:stable nginx:stable-alpine node:18-alpine golang:1.21-alpine golang:1.20-alpine
  postgres:15-alpine redis:7-alpine python:3.11-slim alpine:latest alpine:3.18 busybox:1.36 debian:bookworm-slim)
tree=$(mktemp -d)
cache=$(mktemp -d)
trap 'rm -rf "$tree" "$cache"' EXIT
for i in "${!images[@]}"; do
  mkdir -p "$tree/svc$i"
  printf 'FROM %s\nRUN true\n' "${images[$i]}" >"$tree/svc$i/Dockerfile"
done
proxy="http://$DRBUILD_TESTBED_PROXY/__faultproxy"

# One cold run: images removed, cache emptied; prints "ms ok".
run() {
  "$docker" rmi -f "${images[@]}" >/dev/null 2>&1 || true
  rm -rf "${cache:?}"/*
  local start ok=0
  start=$(date +%s%N)
  "$drbuild" prefetch "$tree" -q --via registry --jobs 4 --cache-dir "$cache" >/dev/null 2>&1 && ok=1
  echo "$((($(date +%s%N) - start) / 1000000)) $ok"
}
faults() { # SEED PROBABILITY
  curl -fsS -XPOST "$proxy/reset" >/dev/null
  curl -fsS -XPOST "$proxy/config" -d "$("$faultproxy" preset request-faults --seed "$1" --probability "$2")" >/dev/null
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
series() { # LABEL PROBABILITY COUNT: seeded runs, prints "complete/count, ms…, median"
  local label=$1 p=$2 count=$3 times=() ok=0 out seed
  for seed in $(seq "$count"); do
    faults "$seed" "$p"
    out=$(run)
    times+=("${out% *}")
    ok=$((ok + ${out#* }))
  done
  curl -fsS -XPOST "$proxy/reset" >/dev/null
  echo "$label: $ok/$count runs complete; ms: ${times[*]}; median $(median "${times[@]}")"
  LAST_MEDIAN=$(median "${times[@]}")
  LAST_OK=$ok
}

echo "== engine ${DRBUILD_TESTBED_ENGINE:-?}, 13 images, registry-native, --jobs 4"
curl -fsS -XPOST "$proxy/reset" >/dev/null
# A fault-free run must work, or the numbers below mean nothing.
"$docker" rmi -f "${images[@]}" >/dev/null 2>&1 || true
"$drbuild" prefetch "$tree" -q --via registry --jobs 4 --cache-dir "$cache" >/dev/null ||
  { echo "transport.sh: a fault-free prefetch failed" >&2; exit 1; }
base=()
for _ in $(seq "$runs"); do out=$(run); base+=("${out% *}"); done
base_median=$(median "${base[@]}")
echo "no faults: ms: ${base[*]}; median $base_median"
series "30% faults on every request" 0.3 "$seeds_30"
echo "   median / fault-free median: $(awk -v a="$LAST_MEDIAN" -v b="$base_median" 'BEGIN {printf "%.2f", a / b}') (target <= 1.5; every run complete)"
series "50% faults on every request" 0.5 "$seeds_50"
echo "   median / fault-free median: $(awk -v a="$LAST_MEDIAN" -v b="$base_median" 'BEGIN {printf "%.2f", a / b}') (target: every run complete)"
