#!/usr/bin/env bash
# make fuzz: run every cargo-fuzz target for FUZZ_SECONDS (default 60) each
# on the nightly toolchain, then print libFuzzer's executions and coverage.
#
#   FUZZ_SECONDS=180 fuzz/run.sh              # all targets, 3 min each
#   FUZZ_TARGETS="jwt_decode options" fuzz/run.sh
#   FUZZ_RUNS=10000000 fuzz/run.sh            # a fixed number of executions per
#                                             # target instead of a time limit
#   FUZZ_SAVE=1 fuzz/run.sh                   # also merge (minimised) new
#                                             # inputs into fuzz/corpus/
#   FUZZ_MAX_LEN=1024 fuzz/run.sh             # longest input (default 8192): the
#                                             # scheduler's event sequences slow from
#                                             # ~8,000 to ~600 runs/s as they grow to 8 KB
#                                             # (same coverage at 1 KB: 1,151 vs 1,152)
#
# The committed seed corpus (fuzz/corpus/<target>/) is only read: libFuzzer
# writes what it finds to fuzz/corpus-scratch/<target>/ (git-ignored, kept
# between runs), crashes to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"

seconds=${FUZZ_SECONDS:-60}
runs=${FUZZ_RUNS:-}
if [ -n "$runs" ]; then limit=(-runs="$runs"); budget="$runs runs"; else limit=(-max_total_time="$seconds"); budget="${seconds}s"; fi
targets=${FUZZ_TARGETS:-"jwt_decode token_response options scheduler tabsync json_diff dpop_proof"}
toolchain=${FUZZ_TOOLCHAIN:-nightly}

rustup toolchain list | grep -q "^$toolchain" || {
  echo "fuzz: the $toolchain toolchain is missing (rustup toolchain install $toolchain)" >&2
  exit 1
}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

cargo "+$toolchain" fuzz build

logs=corpus-scratch/logs
mkdir -p "$logs"
status=0
summary=()
for t in $targets; do
  seed=corpus/$t
  scratch=corpus-scratch/$t
  mkdir -p "$scratch" "artifacts/$t"
  echo "== fuzz $t for $budget (seeds: $(find "$seed" -type f | wc -l) files)"
  # First corpus dir receives new inputs; the seed dir is read only.
  if cargo "+$toolchain" fuzz run "$t" "$scratch" "$seed" -- \
      "${limit[@]}" -timeout=10 -max_len="${FUZZ_MAX_LEN:-8192}" \
      -print_final_stats=1 >"$logs/$t.log" 2>&1; then
    result=ok
  else
    result="FAILED (see fuzz/$logs/$t.log and fuzz/artifacts/$t/)"
    status=1
    grep -E "panicked|ERROR: libFuzzer|SUMMARY|Test unit written" "$logs/$t.log" | head -n 12 || true
  fi
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$logs/$t.log" | tail -n 1 || true)
  runs_line=$(grep -E '^Done [0-9]+ runs' "$logs/$t.log" | tail -n 1 || true)
  echo "   $done_line"
  echo "   $runs_line"
  summary+=("$(printf '%-15s %-10s %s | %s' "$t" "${result%% *}" "${done_line:-no DONE line}" "${runs_line:-}")")
  if [[ ${FUZZ_SAVE:-0} == 1 && $result == ok ]]; then
    # Keep only inputs that add coverage over what is committed.
    cargo "+$toolchain" fuzz run "$t" "$seed" "$scratch" -- -merge=1 >"$logs/$t.merge.log" 2>&1 || true
    echo "   merged into $seed: $(find "$seed" -type f | wc -l) files"
  fi
done

echo
echo "fuzz summary ($budget per target; #runs DONE cov: edges ft: features corp: inputs exec/s)"
printf '  %s\n' "${summary[@]}"
exit $status
