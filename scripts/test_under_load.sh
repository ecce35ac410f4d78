#!/usr/bin/env bash
# The whole suite N times in a row (default 3) while BUSY cores (default 1) spin a Python busy
# loop: the flake hunt of docs/testing.md. Each run's output goes to test-artifacts/load/runN.log;
# one line per run (exit code, seconds, pytest's summary) and any process still alive that was
# started from this checkout are printed at the end. Exit code: the number of failed runs.
#
#   scripts/test_under_load.sh            # 3 runs, 1 busy core
#   RUNS=5 BUSY=2 scripts/test_under_load.sh
set -u
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
busy=${BUSY:-1}
out=test-artifacts/load
mkdir -p "$out"
spinners=()
for _ in $(seq "$busy"); do
  python3 -c "while True: pass" &
  spinners+=($!)
done
trap 'kill "${spinners[@]}" 2>/dev/null' EXIT
failed=0
summary=()
for i in $(seq "$runs"); do
  start=$(date +%s)
  make test > "$out/run$i.log" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
  result=$(grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed)" "$out/run$i.log" | tail -1)
  summary+=("run $i: exit $rc in $(( $(date +%s) - start )) s: $result")
  echo "${summary[-1]}"
done
left=$(ps -eo pid=,args= | grep -F "$PWD/" | grep -v -e grep -e "$0" || true)
echo "--- $runs runs under $busy busy core(s), $failed failed"
printf '%s\n' "${summary[@]}"
if [ -n "$left" ]; then echo "--- still alive:"; echo "$left"; fi
exit "$failed"
