# Sourced by the consumer checks (tests/check_consumers.sh, tests/check_windows_consumers.sh):
# a temporary folder removed on exit, `check NAME COMMAND...` counting passes and failures (a
# failure shows the command's last output lines), and the strict warnings programs build with.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
check() { # name, command...
  local name=$1; shift
  if "$@" >"$tmp/log" 2>&1; then
    echo "ok   $name"; passed=$((passed + 1))
  else
    echo "FAIL $name"; sed 's/^/  /' "$tmp/log" | tail -n 20; failed=$((failed + 1))
  fi
}
strict=(-Wall -Wextra -Wpedantic -Werror)
