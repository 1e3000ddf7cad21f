#!/usr/bin/env bash
# Bundle benchmarks on the local test bed, each measured in one run, pair by pair:
#   export of a >= 500 MB image: `drbuild export` vs `docker save`   target <= 1.1x
#   import of it:                `drbuild import` vs `docker load`   target <= 1.1x
#     (both remove the image first, so both load every layer)
#   drbuild's peak RSS in both                                        target <= 64 MiB
# Settings: RUNS (default 3), IMAGE_MIB (default 600).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
runs=${RUNS:-3}
mib=${IMAGE_MIB:-600}

"$repo/scripts/testbed" up
# shellcheck disable=SC1090
source <("$repo/scripts/testbed" env)
cargo build --release -q -p docker-resilience-cli --manifest-path "$repo/Cargo.toml"
drbuild="${CARGO_TARGET_DIR:-$repo/target}/release/drbuild"
docker=$DRBUILD_TESTBED_DOCKER # the client that matches the test bed's engine
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
image=drbuild-bench/big:$mib

"$drbuild" prefetch "$repo/examples/demo-monorepo" -q >/dev/null
if ! $docker image inspect "$image" >/dev/null 2>&1; then
  printf 'FROM busybox:1.36\nRUN head -c %sm /dev/urandom > /blob\n' "$mib" >"$work/Dockerfile"
  $docker build -q --network none -t "$image" "$work" >/dev/null
fi

echo "== export of a $mib MiB image"
python3 "$here/paired.py" "$runs" "$drbuild export -q -o $work/a.bundle $image" "$docker save -o $work/b.tar $image"
echo "== import of it"
python3 "$here/paired.py" "$runs" \
  "$docker rmi -f $image >/dev/null; $drbuild import -q $work/a.bundle" \
  "$docker rmi -f $image >/dev/null; $docker load -q -i $work/b.tar"
echo "== drbuild's peak RSS"
python3 - "$drbuild" "$work" "$image" <<'PY'
import resource, subprocess, sys
drbuild, work, image = sys.argv[1:]
for args in (["export", "-q", "-o", f"{work}/c.bundle", image], ["import", "-q", f"{work}/c.bundle"]):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([drbuild, *args], check=True, stdout=subprocess.DEVNULL)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"drbuild {args[0]}: peak RSS {peak / 1024:.1f} MiB" + ("" if peak > before else " (at most)"))
PY
