#!/usr/bin/env bash
# Prefetch benchmarks on the local test bed (scripts/testbed), 13 images, each in one run:
#   1. no-op (all present): drbuild prefetch vs our users' bash (baseline-prefetch.sh)  target <= 0.2x
#   2. cold, no faults: drbuild prefetch --jobs 4 vs `xargs -P4 docker pull`   target <= 1.1x
#      (both commands first remove the 13 images, so both ratios include that equal cost)
#   3. 30% manifest faults (EOF/500/429), 10 seeded runs: every run complete, and
#      drbuild's median time <= 2x a naive no-sleep retry loop's (xargs -P4, 10 tries).
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
drbuild="${CARGO_TARGET_DIR:-$repo/target}/release/drbuild"
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
cold_cache=$(mktemp -d) # emptied before each run: the blob cache would make it warm
python3 "$here/paired.py" "$runs" \
  "$rmi; rm -rf $cold_cache; $drbuild prefetch $tree -q --jobs 4 --cache-dir $cold_cache" \
  "$rmi; printf '%s\n' ${images[*]} | xargs -P4 -n1 $docker pull -q"

echo "== 3. 30% manifest faults (EOF/500/429), $fault_runs seeded runs, 4 at a time"
echo "   drbuild prefetch vs a naive loop (xargs -P4, 10 tries per image, no sleep)"
echo "   target: every run complete; drbuild's median <= 2x the loop's"
faults() {
  curl -fsS -XPOST "$proxy/reset" >/dev/null
  curl -fsS -XPOST "$proxy/config" -d "$("$faultproxy" preset manifest-faults --seed "$1" --probability 0.3)" >/dev/null
}
naive="xargs -P4 -n1 sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do $docker pull -q \"\$0\" >/dev/null 2>&1 && exit 0; done; exit 1'"
cache=$(mktemp -d)
d_times=() n_times=() d_ok=0 n_ok=0
for seed in $(seq "$fault_runs"); do
  eval "$rmi"; rm -rf "${cache:?}"/*; faults "$seed"
  start=$(date +%s%N)
  "$drbuild" prefetch "$tree" -q --jobs 4 --cache-dir "$cache" >/dev/null 2>&1 && d_ok=$((d_ok + 1))
  d_times+=($((($(date +%s%N) - start) / 1000000)))
  eval "$rmi"; faults "$seed"
  start=$(date +%s%N)
  printf '%s\n' "${images[@]}" | eval "$naive" && n_ok=$((n_ok + 1))
  n_times+=($((($(date +%s%N) - start) / 1000000)))
done
curl -fsS -XPOST "$proxy/reset" >/dev/null
rm -rf "$cache"
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
dm=$(median "${d_times[@]}") nm=$(median "${n_times[@]}")
echo "drbuild:    $d_ok/$fault_runs runs complete; ms: ${d_times[*]}; median $dm"
echo "naive loop: $n_ok/$fault_runs runs complete; ms: ${n_times[*]}; median $nm"
echo "ratio of medians: $(awk -v a="$dm" -v b="$nm" 'BEGIN {printf "%.2f", a / b}')"
rm -rf "$tree" "$cold_cache"
