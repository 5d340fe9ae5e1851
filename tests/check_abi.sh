#!/usr/bin/env bash
# A program built against the previous header (tests/abi/0.2/moevk.h) runs against the current
# library like the same program built against the current header: the same output but for the
# structs' sizes, which must differ. Usage: tests/check_abi.sh BUILD_DIR. Ends with
# "N passed, N failed".
set -uo pipefail
build=${1:?build folder}
old=$("$build/tests/abi_route_program_0_2") || { echo "not ok   the 0.2 program failed"; echo "0 passed, 1 failed"; exit 1; }
new=$("$build/tests/abi_route_program") || { echo "not ok   the current program failed"; echo "0 passed, 1 failed"; exit 1; }
passed=0 failed=0
if [ "$(echo "$old" | head -n 1)" != "$(echo "$new" | head -n 1)" ]; then
  echo "ok   the two programs see different layouts: $(echo "$old" | head -n 1) / $(echo "$new" | head -n 1 | cut -d: -f2)"
  passed=$((passed + 1))
else
  echo "not ok   both programs were built with the same layout: $(echo "$old" | head -n 1)"
  failed=$((failed + 1))
fi
if [ "$(echo "$old" | tail -n +2)" = "$(echo "$new" | tail -n +2)" ]; then
  echo "ok   the 0.2 program routes, combines and takes the losses as the current one does"
  echo "$old" | tail -n +2 | sed 's/^/  /'
  passed=$((passed + 1))
else
  echo "not ok   the outputs differ:"
  diff <(echo "$old") <(echo "$new") | sed 's/^/  /'
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
