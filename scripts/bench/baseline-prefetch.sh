#!/usr/bin/env bash
# The bash our users ran before drbuild (the `prefetch_base_images` step of a monorepo's `build.sh build-all`), kept as a
# benchmark baseline: grep the FROM lines, `docker image inspect` each image, pull the
# missing ones with 3 tries and `sleep $((retry * 5))` between them.
# Usage: baseline-prefetch.sh ROOT   (prints "ok N failed M" last; exit 1 if any failed)
set -uo pipefail
root=${1:-.}
docker=${DOCKER:-docker}
mapfile -t images < <(find "$root" -name 'Dockerfile*' -type f -exec grep -h '^FROM' {} + | awk '{print $2}' | sort -u)
ok=0
failed=()
for image in "${images[@]}"; do
  if "$docker" image inspect "$image" >/dev/null 2>&1; then
    ok=$((ok + 1))
    continue
  fi
  retry_count=0
  max_retries=3
  pull_success=false
  while [[ $retry_count -lt $max_retries ]]; do
    if "$docker" pull "$image" >/dev/null 2>&1; then
      pull_success=true
      break
    else
      retry_count=$((retry_count + 1))
      [[ $retry_count -lt $max_retries ]] && sleep $((retry_count * ${SLEEP_UNIT:-5}))
    fi
  done
  if [[ $pull_success == true ]]; then ok=$((ok + 1)); else failed+=("$image"); fi
done
echo "ok $ok failed ${#failed[@]} ${failed[*]}"
[[ ${#failed[@]} -eq 0 ]]
