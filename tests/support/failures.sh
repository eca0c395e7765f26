#!/usr/bin/env bash
# failures.sh LOG... : sums up what failed in the logs of node's test runner (and of the
# suites' own scripts) in at most 40 lines, for the end of a run. CI shows only the tail of
# what it ran; this puts the names of the failed tests and the first lines of their errors
# there. Prints every "not ok" line, the `error:` of each (three more lines when the error
# is a block), and every line that says a suite, a lane or an engine failed or passed.
set -uo pipefail
echo "what failed:"
awk '
  function cut(line, n) { return length(line) > n ? substr(line, 1, n) "..." : line }
  /not ok [0-9]+ - / { print cut($0, 220); want = 1; more = 0; next }
  want && /^(\[[12]\] +)? +error: / { print cut($0, 300); if ($0 ~ /error: [|>]-?$/) more = 3; want = 0; next }
  more > 0 { print cut($0, 300); more--; next }
  /FAILED|lane [12] failed|[0-9]+\/[0-9]+ passed/ { print }
' "$@" | head -40
