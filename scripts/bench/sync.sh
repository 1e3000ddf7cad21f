#!/usr/bin/env bash
# Sync benchmark on the local test bed: the 13 images of tests/data/thirteen copied
# from the fault proxy (no faults) into the empty LAN registry, by `drbuild sync`
# (cold: an empty blob cache) and by `skopeo sync --all` (Debian's skopeo; --all
# because drbuild keeps multi-platform digests, which the registry accepts only with
# every platform), in turn, RUNS times each. The LAN registry is emptied before each
# run, outside the timing. Prints each run and the median ratio drbuild / skopeo.
# Settings: RUNS (default 5), DRBUILD_TESTBED_ENGINE.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
runs=${RUNS:-5}

command -v skopeo >/dev/null || apt-get install -y -q skopeo >/dev/null
"$repo/scripts/testbed" up
# shellcheck disable=SC1090
source <("$repo/scripts/testbed" env)
cargo build --release -q -p docker-resilience-cli --manifest-path "$repo/Cargo.toml"
drbuild="${CARGO_TARGET_DIR:-$repo/target}/release/drbuild"
curl -fsS -XPOST "http://$DRBUILD_TESTBED_PROXY/__faultproxy/reset" >/dev/null

work=$(mktemp -d)
cat >"$work/images.yaml" <<YAML
$DRBUILD_TESTBED_PROXY:
  tls-verify: false
  images:
    library/ubuntu: ["22.04"]
    library/nginx: ["stable", "stable-alpine"]
    library/node: ["18-alpine"]
    library/golang: ["1.21-alpine", "1.20-alpine"]
    library/postgres: ["15-alpine"]
    library/redis: ["7-alpine"]
    library/python: ["3.11-slim"]
    library/alpine: ["latest", "3.18"]
    library/busybox: ["1.36"]
    library/debian: ["bookworm-slim"]
YAML
lan() { "$repo/scripts/testbed" lan-reset >/dev/null 2>&1; }
ms() { echo $(((${2} - ${1}) / 1000000)); }
d_times=() s_times=()
for _ in $(seq "$runs"); do
  lan; rm -rf "$work/cache"
  start=$(date +%s%N)
  "$drbuild" sync "$repo/tests/data/thirteen" --to "$DRBUILD_TESTBED_LAN" --cache-dir "$work/cache" -q >/dev/null
  d_times+=("$(ms "$start" "$(date +%s%N)")")
  lan
  start=$(date +%s%N)
  skopeo sync --all --src yaml --dest docker --dest-tls-verify=false "$work/images.yaml" "$DRBUILD_TESTBED_LAN/library" >/dev/null 2>&1
  s_times+=("$(ms "$start" "$(date +%s%N)")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
dm=$(median "${d_times[@]}") sm=$(median "${s_times[@]}")
echo "drbuild sync:  ms ${d_times[*]}; median $dm"
echo "skopeo sync:   ms ${s_times[*]}; median $sm"
echo "ratio of medians drbuild / skopeo: $(awk -v a="$dm" -v b="$sm" 'BEGIN {printf "%.2f", a / b}')"
rm -rf "$work"
