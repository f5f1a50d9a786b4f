#!/usr/bin/env bash
# Runs the workerd suite (test/workerd, issue 17) N times under CPU load and reports failures.
#
#   scripts/stress-workerd.sh N            # N runs (default 20), one busy loop per core alongside
#   STRESS_BUSY=0 scripts/stress-workerd.sh 5   # no load (a baseline)
#   STRESS_BUSY=4 scripts/stress-workerd.sh 20  # 4 busy loops whatever the core count
#
# A run fails when vitest exits non-zero or its output reports an unhandled error/rejection (the
# issue's "Error: undefined"). There are no retries: every failure is counted. Each run's output
# is kept in $STRESS_LOG_DIR (default a fresh mktemp dir), printed at the end with the tally; the
# exit status is 1 when any run failed. Needs `nestlm setup` (model, corpus) done once.
set -u
N="${1:-20}"
BUSY="${STRESS_BUSY:-$(nproc)}"
LOG_DIR="${STRESS_LOG_DIR:-$(mktemp -d -t stress-workerd.XXXXXX)}"
mkdir -p "$LOG_DIR"
cd "$(dirname "$0")/.."

busy_pids=()
run_pid=""
stop_busy() {
  for pid in "${busy_pids[@]}"; do kill "$pid" 2>/dev/null; done
  busy_pids=()
}
# The suite runs in the background and is waited for, so an interrupt stops it and the busy loops at once.
trap '[ -n "$run_pid" ] && kill -- -"$run_pid" 2>/dev/null; stop_busy; exit 130' INT TERM
trap stop_busy EXIT

for ((b = 0; b < BUSY; b++)); do
  ( while :; do :; done ) &
  busy_pids+=("$!")
done
echo "stress-workerd: $N runs of the workerd suite, $BUSY busy loop(s) on $(nproc) core(s), logs in $LOG_DIR"

fail=0
unhandled=0
failed_runs=()
start_s=$SECONDS
for ((i = 1; i <= N; i++)); do
  log="$LOG_DIR/run-$i.log"
  t0=$SECONDS
  set -m # own process group, so the interrupt trap can stop vitest and workerd together
  npx vitest run --config test/workerd/vitest.config.ts >"$log" 2>&1 &
  run_pid=$!
  set +m
  wait "$run_pid"
  rc=$?
  run_pid=""
  # Unhandled errors make vitest exit 1; grep anyway so a run is never counted clean on the exit status alone.
  if grep -Eq "Unhandled (Rejection|Error)|Errors +[0-9]+ error" "$log"; then u=1; else u=0; fi
  if [ "$rc" -ne 0 ] || [ "$u" -eq 1 ]; then
    fail=$((fail + 1))
    unhandled=$((unhandled + u))
    failed_runs+=("$i")
    reason=$(grep -Eo "Unhandled (Rejection|Error)|Error: [^[:cntrl:]]{0,80}|[0-9]+ failed" "$log" | sed 's/\x1b\[[0-9;]*m//g' | sort -u | head -3 | tr '\n' ';')
    echo "run $i/$N: FAIL (exit $rc, $((SECONDS - t0)) s) $reason"
  else
    echo "run $i/$N: ok ($((SECONDS - t0)) s)"
  fi
done
stop_busy
echo "stress-workerd: $fail of $N runs failed ($unhandled with an unhandled error/rejection), $BUSY busy loop(s), $((SECONDS - start_s)) s in all${failed_runs:+; failed runs: ${failed_runs[*]}}; logs in $LOG_DIR"
[ "$fail" -eq 0 ]
