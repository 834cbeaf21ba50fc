#!/usr/bin/env bash
# Runs each libFuzzer target for a bounded time from the committed seed corpus (fuzz/corpus/<target>)
# and prints its executions; a crash, sanitizer report, uncaught non-ember exception, leak or
# timeout fails the run (libFuzzer saves the input as crash-*/leak-*/timeout-* in $FUZZ_ARTIFACTS,
# default /tmp/ember-fuzz-artifacts).
# Usage: fuzz/run.sh BUILD_DIR SECONDS_PER_TARGET [TARGET...]   (targets: idx safetensors checkpoint pth)
set -euo pipefail
build=${1:?usage: fuzz/run.sh BUILD_DIR SECONDS_PER_TARGET [TARGET...]}
seconds=${2:?usage: fuzz/run.sh BUILD_DIR SECONDS_PER_TARGET [TARGET...]}
shift 2
targets=("$@")
((${#targets[@]})) || targets=(idx safetensors checkpoint pth)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ember turns a failed allocation into OutOfMemory; ASan must return null rather than stop there.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1"
artifacts=${FUZZ_ARTIFACTS:-/tmp/ember-fuzz-artifacts}
mkdir -p "$artifacts"
status=0
for t in "${targets[@]}"; do
  work=$(mktemp -d "/tmp/ember-fuzz-$t.XXXXXX")  # new inputs go here, not into the repository
  log="$work/log.txt"
  rc=0
  # -max_len: inputs up to 1 MB; -timeout: one input taking 10 s is a hang; -rss_limit_mb: the
  # readers may legitimately decode up to their limits.
  "$build/fuzz/fuzz_$t" -max_len=1048576 -timeout=10 -rss_limit_mb=4096 -max_total_time="$seconds" \
    -print_final_stats=1 -artifact_prefix="$artifacts/$t-" "$work" "$here/corpus/$t" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "fuzz_$t: ${runs:-?} executions in ${seconds}s, exit $rc"
  if ((rc != 0)); then
    tail -n 60 "$log"
    status=1
  fi
  rm -rf "$work"
done
exit "$status"
