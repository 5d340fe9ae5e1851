#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test on lavapipe at
# subgroup sizes 8 and 4 (LP_NATIVE_VECTOR_WIDTH=128) with the validation layer and
# synchronization validation on, again through staging buffers (the discrete-GPU path), then
# once more under AddressSanitizer, UndefinedBehaviorSanitizer and LeakSanitizer, and the
# threads test under ThreadSanitizer. Ends with "N passed, N failed". MOEVK_DEVICE picks another device.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1

build() { # folder, meson options...
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dwerror=true "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; exit 1; }
  else
    meson configure "$dir" -Dwerror=true "$@" >/dev/null || exit 1
  fi
  ninja -C "$dir" >"$dir.build.log" 2>&1 || { cat "$dir.build.log"; exit 1; }
}
build build
build build-sanitize -Db_sanitize=address,undefined -Db_lundef=false
build build-tsan -Db_sanitize=thread -Db_lundef=false

passed=0
failed=0
log=$(mktemp)
run() { # label, environment and command...
  local label=$1; shift
  echo "== $label"
  env "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]} line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "(no result line: counted as one failure)"
    failed=$((failed + 1))
    return
  fi
  passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
  failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
  # A leak or sanitizer report after the last test fails the run even when every test passed.
  if [ "$status" -ne 0 ] && [ "$(echo "$line" | cut -d' ' -f3)" = 0 ]; then
    echo "(exit status $status after all tests passed: counted as one failure)"
    failed=$((failed + 1))
  fi
}

device=${MOEVK_DEVICE:-llvmpipe}
# mpirun as root too (CI's containers), each rank's lavapipe on one thread: ranks share the cores.
mpi=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
     LP_NUM_THREADS=1)
for subgroup in 8 4; do
  vector_width=256
  [ "$subgroup" = 4 ] && vector_width=128
  common=(MOEVK_DEVICE="$device" LP_NATIVE_VECTOR_WIDTH=$vector_width)
  [ "$device" = llvmpipe ] && common+=(MOEVK_TEST_EXPECT_SUBGROUP=$subgroup)
  for t in test_api test_interface test_projection test_safetensors test_gguf test_quant test_routing test_noise test_losses test_history test_modes test_sizes test_golden test_layer test_layer_backward test_layer_train test_resubmit test_token_scores test_profile test_record test_layer_record test_threads test_faults; do
    run "$t, lavapipe subgroup size $subgroup" "${common[@]}" build/tests/$t
  done
  run "test_cli, lavapipe subgroup size $subgroup" "${common[@]}" build/tests/test_cli build/cli/moevk
  run "test_layer_cli, lavapipe subgroup size $subgroup" "${common[@]}" build/tests/test_layer_cli build/cli/moevk
  # The expert-parallel layer over 2 and 4 MPI ranks on one machine (more ranks than cores).
  for np in 2 4; do
    [ "$subgroup" = 4 ] && [ "$np" = 4 ] && continue
    run "test_mpi_layer, $np ranks, lavapipe subgroup size $subgroup" "${common[@]}" "${mpi[@]}" \
      mpirun --oversubscribe -np $np build/tests/test_mpi_layer
  done
done

# The staging path that discrete GPUs take, on lavapipe too.
for t in test_api test_interface test_projection test_routing test_noise test_losses test_history test_modes test_golden test_layer test_layer_train test_resubmit test_token_scores test_profile; do
  run "$t, staging buffers" MOEVK_DEVICE="$device" MOEVK_TEST_STAGING=1 build/tests/$t
done
run "test_mpi_layer, 2 ranks, staging buffers" MOEVK_DEVICE="$device" MOEVK_TEST_STAGING=1 "${mpi[@]}" \
  mpirun --oversubscribe -np 2 build/tests/test_mpi_layer
# The expert-parallel example, as a user runs it: its output checked against one process's.
run "example expert_parallel, 2 ranks" "${mpi[@]}" bash -c 'mpirun --oversubscribe -np 2 \
  build/examples/expert_parallel && echo "1 passed, 0 failed" || echo "0 passed, 1 failed"'

sanitize=(MOEVK_DEVICE="$device" MOEVK_TEST_VALIDATION=0
          ASAN_OPTIONS=detect_leaks=1:verify_asan_link_order=0:abort_on_error=0
          UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
          LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0)
# Keep lavapipe loaded so that LeakSanitizer can name (and suppress) its allocations.
lvp=$(ls /usr/lib/*/libvulkan_lvp.so 2>/dev/null | head -n 1)
[ -n "$lvp" ] && sanitize+=(LD_PRELOAD="$lvp")
for t in test_api test_interface test_projection test_safetensors test_gguf test_quant test_routing test_noise test_losses test_history test_modes test_golden test_layer test_layer_backward test_layer_train test_resubmit test_token_scores test_profile test_record test_layer_record test_threads test_faults; do
  run "$t under ASan+UBSan+LSan" "${sanitize[@]}" build-sanitize/tests/$t
done
run "test_cli under ASan+UBSan+LSan" "${sanitize[@]}" build-sanitize/tests/test_cli build-sanitize/cli/moevk
run "test_layer_cli under ASan+UBSan+LSan" "${sanitize[@]}" build-sanitize/tests/test_layer_cli build-sanitize/cli/moevk
# Without LeakSanitizer: Open MPI's components leak at exit from code it has unloaded, which
# no suppression can name (their stacks end in "<unknown module>").
run "test_mpi_layer, 2 ranks, staging buffers, under ASan+UBSan" "${sanitize[@]}" \
  ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0:abort_on_error=0 MOEVK_TEST_STAGING=1 \
  "${mpi[@]}" mpirun --oversubscribe -np 2 build-sanitize/tests/test_mpi_layer
# The size sweep's random cases too (its fixed largest ones would take minutes here).
run "test_sizes, random sizes, under ASan+UBSan+LSan" "${sanitize[@]}" build-sanitize/tests/test_sizes random
# Several threads on one context under ThreadSanitizer (the layer off: it is not instrumented).
run "test_threads under ThreadSanitizer" MOEVK_DEVICE="$device" MOEVK_TEST_VALIDATION=0 \
  TSAN_OPTIONS=halt_on_error=1:exitcode=66 build-tsan/tests/test_threads
# A program built against moevk 0.2's header runs against this library as when built now.
run "a 0.2 program against this library" env MOEVK_DEVICE="$device" tests/check_abi.sh build
# Each kernel binds only the buffers, and pushes only the parameters, that its shader uses.
run "stage interfaces, each entry used" python3 tests/check_stage_interfaces.py
# The cross-vendor chart: bench/merge.py's log time axis and its share-of-ceiling view.
run "bench/merge.py on the recorded H100 and lavapipe results" python3 tests/check_merge.py
run "installed, static, subproject and C++ consumers" tests/check_consumers.sh build
# libFuzzer on the .npy reader and the configuration checks, briefly (scripts/fuzz.sh N for longer).
run "fuzzers, 30 s each" scripts/fuzz.sh 30
# The Windows build (MinGW-w64) and the device tests ported so far, under Wine on lavapipe.
run "the Windows build under Wine" scripts/test-windows.sh
rm -f "$log"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
