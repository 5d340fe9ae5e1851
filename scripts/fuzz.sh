#!/usr/bin/env bash
# Builds the libFuzzer targets with clang, AddressSanitizer and UndefinedBehaviorSanitizer, and
# runs each for SECONDS (default 30) from its corpus in tests/fuzz/corpus. Longer runs:
# scripts/fuzz.sh 3600. Ends with "N passed, N failed" (a target fails if it finds a crash).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang meson setup build-fuzz -Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false \
    >build-fuzz.setup.log 2>&1 || { cat build-fuzz.setup.log; exit 1; }
fi
ninja -C build-fuzz tests/fuzz/fuzz_npy tests/fuzz/fuzz_safetensors tests/fuzz/fuzz_router_info tests/fuzz/fuzz_model_files tests/fuzz/fuzz_gguf tests/fuzz/fuzz_profile >build-fuzz.build.log 2>&1 ||
  { cat build-fuzz.build.log; exit 1; }
passed=0
failed=0
for target in npy safetensors router_info model_files gguf profile; do
  corpus=$(mktemp -d) # new inputs land here; the checked-in corpus stays as it is
  mkdir -p "tests/fuzz/corpus/$target"
  log=$(mktemp)
  max_len=512
  [ "$target" = gguf ] && max_len=1024 # a few keys and tensors already pass 512 bytes
  [ "$target" = profile ] && max_len=2048 # the smallest profile is about 1 kB of JSON
  UBSAN_OPTIONS=halt_on_error=1 ASAN_OPTIONS=detect_leaks=1 MOEVK_TEST_VALIDATION=0 \
    LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0 \
    build-fuzz/tests/fuzz/fuzz_$target -max_total_time="$seconds" -rss_limit_mb=4096 \
    -max_len=$max_len -print_final_stats=1 -artifact_prefix="$corpus/" \
    "$corpus" "tests/fuzz/corpus/$target" >"$log" 2>&1
  status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
  if [ $status -eq 0 ]; then
    echo "ok   fuzz_$target: ${runs:-?} inputs in ${seconds}s"
    passed=$((passed + 1))
  else
    echo "FAIL fuzz_$target (exit $status):"
    grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -n 5 | sed 's/^/  /'
    failed=$((failed + 1))
  fi
  rm -rf "$corpus" "$log"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
