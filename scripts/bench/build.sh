#!/usr/bin/env bash
# Build benchmarks on the local test bed (scripts/testbed), each measured in one run:
#   1. 4 independent services (each a 2 s RUN step), `build-all --force --jobs 2`
#      against `--jobs 1`, pair by pair                              target <= 0.65x
#   2. peak RSS of drbuild while it sends a 1 GiB build context      target <= 64 MiB
# Settings: RUNS (default 5) for 1; CONTEXT_MIB (default 1024) for 2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
runs=${RUNS:-5}
mib=${CONTEXT_MIB:-1024}

"$repo/scripts/testbed" up
# shellcheck disable=SC1090
source <("$repo/scripts/testbed" env)
cargo build --release -q -p docker-resilience-cli --manifest-path "$repo/Cargo.toml"
drbuild="${CARGO_TARGET_DIR:-$repo/target}/release/drbuild"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== 1. 4 independent services: --jobs 2 vs --jobs 1"
for i in 1 2 3 4; do
  mkdir -p "$work/four/svc$i"
  printf 'FROM busybox:1.36\nRUN sleep 2 && echo %s > /id\n' "$i" >"$work/four/svc$i/Dockerfile"
done
"$drbuild" build-all "$work/four" -q >/dev/null # prefetch the base once
python3 "$here/paired.py" "$runs" \
  "$drbuild build-all $work/four --force --jobs 2 -q --no-prefetch" \
  "$drbuild build-all $work/four --force --jobs 1 -q --no-prefetch"

echo "== 2. peak RSS while sending a ${mib} MiB build context"
mkdir -p "$work/big/ctx"
printf 'FROM busybox:1.36\nRUN true\n' >"$work/big/ctx/Dockerfile"
head -c "$((mib * 1024 * 1024))" /dev/urandom >"$work/big/ctx/blob"
python3 - "$drbuild" "$work/big" <<'PY'
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.run([sys.argv[1], "build-all", sys.argv[2], "--force", "-q", "--no-prefetch"],
                      stdout=subprocess.DEVNULL).returncode
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"exit {code}, {wall:.1f} s, drbuild peak RSS {peak:.1f} MiB")
PY
