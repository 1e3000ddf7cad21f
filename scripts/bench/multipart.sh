#!/usr/bin/env bash
# Big blobs in parallel ranged parts over a long thin link, on the local test bed
# (scripts/testbed): the fault proxy, the daemon's mirror, caps each connection at RATE
# bytes/s and adds LATENCY_MS to every request. Side by side in one run, pair by pair
# (images removed and a fresh cache before each run), medians:
#   1. the 64 MiB-layer image: `docker pull` vs `drbuild prefetch` (target <= 0.2x)
#   2. the 13 stand-in images: `xargs -P4 docker pull` vs `drbuild prefetch` (<= 0.6x),
#      and in the same rounds the daemon's own floor: `xargs -P13 docker pull` of the
#      same images straight from the test bed's registry (loopback, no thin link at all)
#   3. the plain loopback link (no cap): `drbuild prefetch` vs the same with `--parts 1`
#      (one stream per blob, as before parts), the 13 images and the big one (<= 1.05x)
#   4. peak memory of `drbuild prefetch` of an image with a 1 GiB layer, on the plain
#      link (target <= 64 MiB); its seeding takes a minute the first time.
# Settings: RUNS (default 5), PLAIN_RUNS (pairs of case 3, default 15: the daemon's
# unpack of the big layer makes single runs vary by +-15%), RATE (default 4000000),
# LATENCY_MS (default 100), DRBUILD_ARGS (extra flags for every drbuild run, e.g. "--parts 16"), SKIP_HUGE=1,
# DRBUILD_TESTBED_ENGINE (the test bed's engine).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
runs=${RUNS:-5}
plain_runs=${PLAIN_RUNS:-15}
rate=${RATE:-4000000}
latency=${LATENCY_MS:-100}
read -r -a extra <<<"${DRBUILD_ARGS:-}"

"$repo/scripts/testbed" up
# shellcheck disable=SC1090
source <("$repo/scripts/testbed" env)
cargo build --release -q -p docker-resilience-cli --manifest-path "$repo/Cargo.toml"
drbuild="${CARGO_TARGET_DIR:-$repo/target}/release/drbuild"
cargo build -q -p docker-resilience-tests --bins --manifest-path "$repo/Cargo.toml"
bins="${CARGO_TARGET_DIR:-$repo/target}/debug"
docker=$DRBUILD_TESTBED_DOCKER
proxy="http://$DRBUILD_TESTBED_PROXY/__faultproxy"
big=pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime
images=(ubuntu:22.04 nginx:stable nginx:stable-alpine node:18-alpine golang:1.21-alpine golang:1.20-alpine
  postgres:15-alpine redis:7-alpine python:3.11-slim alpine:latest alpine:3.18 busybox:1.36 debian:bookworm-slim)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tree_of() { # DIR IMAGE...: a tree with one Dockerfile per image
  local dir=$1 i=0
  shift
  for image in "$@"; do
    mkdir -p "$dir/svc$i"
    printf 'FROM %s\nRUN true\n' "$image" >"$dir/svc$i/Dockerfile"
    i=$((i + 1))
  done
}
tree_of "$work/big" "$big"
tree_of "$work/all" "${images[@]}"
tree_of "$work/both" "${images[@]}" "$big"

link() { # thin | plain
  curl -fsS -XPOST "$proxy/reset" >/dev/null
  if [ "$1" = thin ]; then
    curl -fsS -XPOST "$proxy/config" \
      -d "$("$bins/faultproxy" preset thin-link --rate "$rate" --latency-ms "$latency")" >/dev/null
  fi
}
ms() { # COMMAND...: runs it, prints its milliseconds (fails the script if it fails)
  local start
  start=$(date +%s%N)
  "$@" >/dev/null 2>&1 || { echo "multipart.sh: failed: $*" >&2; exit 1; }
  echo $((($(date +%s%N) - start) / 1000000))
}
# Cold for both sides: images removed, the build cache and unreferenced content pruned.
# A containerd store keeps an image's blobs while anything points at them: a name (a
# digest reference), or the build cache of the test bed's earlier builds (with it, a
# `docker pull` of the 13 images fetched 17 of their 58 blobs).
clean() {
  "$docker" rmi -f "$@" >/dev/null 2>&1 || true
  "$docker" builder prune -af >/dev/null 2>&1 || true
  "$docker" image prune -af >/dev/null 2>&1 || true
  rm -rf "$work/cache"
}
pull_all() { printf '%s\n' "$@" | xargs -P4 -n1 "$docker" pull -q; }
direct() { # IMAGE...: their names in the test bed's registry (no proxy on the way)
  printf "$DRBUILD_TESTBED_REGISTRY/library/%s\n" "$@"
}
pull_direct() { direct "$@" | xargs -P13 -n1 "$docker" pull -q; }
prefetch() { # TREE [FLAG...]: with DRBUILD_ARGS
  local tree=$1
  shift
  "$drbuild" prefetch "$tree" -q --via registry --cache-dir "$work/cache" "${extra[@]}" "$@"
}
one_stream() { # TREE: one stream per blob, without DRBUILD_ARGS (as before parts)
  "$drbuild" prefetch "$1" -q --via registry --cache-dir "$work/cache" --parts 1
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
moved() { curl -fsS "$proxy/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["bytes"])'; }
pairs() { # LABEL TARGET LINK "BASELINE" "CANDIDATE" IMAGE...: RUNS pairs, medians, ratio
  # With FLOOR="COMMAND", each round also times it (the images it names are removed too).
  local label=$1 target=$2 how=$3 base_cmd=$4 cand_cmd=$5 a=() b=() f=() n=$runs bytes_a bytes_b
  shift 5
  [ "$how" = plain ] && n=$plain_runs
  for _ in $(seq "$n"); do
    clean "$@"; link "$how"; a+=("$(ms eval "$base_cmd")"); bytes_a=$(moved)
    clean "$@"; link "$how"; b+=("$(ms eval "$cand_cmd")"); bytes_b=$(moved)
    if [ -n "${FLOOR:-}" ]; then
      clean "$@" $(direct "$@"); f+=("$(ms eval "$FLOOR")")
    fi
  done
  [ -n "${FLOOR:-}" ] && clean $(direct "$@")
  link plain
  local ma mb mf
  ma=$(median "${a[@]}")
  mb=$(median "${b[@]}")
  echo "$label: baseline ms ${a[*]} (median $ma); drbuild ms ${b[*]} (median $mb); ratio $(ratio "$mb" "$ma") (target $target); bytes through the proxy in the last pair: baseline $bytes_a, drbuild $bytes_b"
  if [ -n "${FLOOR:-}" ]; then
    mf=$(median "${f[@]}")
    echo "  the daemon alone, from the loopback registry (no thin link, xargs -P13): ms ${f[*]} (median $mf); $(ratio "$mf" "$ma")x the baseline"
  fi
}

echo "== engine ${DRBUILD_TESTBED_ENGINE:-?}; thin link: $rate bytes/s per connection, +$latency ms per request; drbuild ${extra[*]:-(defaults)}"
pairs "64 MiB layer, thin link, docker pull vs drbuild" "<= 0.2" thin \
  "$docker pull -q $big" "prefetch $work/big" "$big"
FLOOR="pull_direct ${images[*]}" pairs "13 images, thin link, xargs -P4 docker pull vs drbuild" \
  "<= 0.6" thin "pull_all ${images[*]}" "prefetch $work/all" "${images[@]}"
pairs "13 images + the big one, plain link, drbuild --parts 1 vs drbuild" "<= 1.05" plain \
  "one_stream $work/both" "prefetch $work/both" "${images[@]}" "$big"
# What the last thin-link run of drbuild did, from its own statistics.
clean "$big"; link thin
pick() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(json.dumps(eval(sys.argv[1])))' "$1"; }
prefetch "$work/big" --json |
  pick '[{k: e.get(k) for k in ("endpoint", "requests", "parts", "max_connections", "bytes")} for e in d["endpoints"]]'
curl -fsS "$proxy/stats" | pick '{k: d[k] for k in ("forwarded", "ranged", "peak_active", "bytes")}'
link plain

if [ "${SKIP_HUGE:-}" != 1 ]; then
  huge=bench/huge:1
  # Seeded once: a 1 GiB layer of incompressible bytes.
  if ! curl -fsS -o /dev/null "http://$DRBUILD_TESTBED_REGISTRY/v2/bench/huge/manifests/1" \
      -H 'Accept: application/vnd.docker.distribution.manifest.v2+json'; then
    "$bins/seed-registry" --registry "$DRBUILD_TESTBED_REGISTRY" --extra "$huge" --size $((1 << 30))
  fi
  tree_of "$work/huge" "$huge"
  clean "$huge"
  /usr/bin/time -f '%M %e' -o "$work/time" "$drbuild" prefetch "$work/huge" -q --via registry \
    --cache-dir "$work/cache" "${extra[@]}" >/dev/null
  read -r kib secs <"$work/time"
  echo "1 GiB layer, plain link: drbuild peak memory $((kib / 1024)) MiB in ${secs}s (target <= 64 MiB)"
  clean "$huge"
fi
