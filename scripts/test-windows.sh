#!/usr/bin/env bash
# The Windows build (MinGW-w64, cross/x86_64-w64-mingw32.txt) and its tests under Wine on
# lavapipe: Wine's winevulkan forwards vulkan-1.dll to this machine's loader, and needs a display
# driver, hence xvfb-run. Runs every device test and the command-line tests at lavapipe's subgroup
# sizes 8 and 4, the demo, the examples, a short benchmark and the ways applications link it; the
# validation layer does not exist inside Wine, so these runs check results only (the Linux runs
# check validation and synchronization). Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
# The Vulkan headers and volk are the same files for every system: the cross compiler sees them
# through a folder of links to Debian's (nothing copied, nothing vendored).
headers=$PWD/build-windows-headers
mkdir -p "$headers"
for h in vulkan vk_video volk.h volk.c; do ln -sfn "/usr/include/$h" "$headers/$h"; done
# cJSON (profile and model files) from Debian's source package: Debian has no MinGW build of it.
cjson=$(scripts/cjson-source.sh) || exit 1
if [ ! -f build-windows/build.ninja ]; then
  meson setup build-windows --cross-file cross/x86_64-w64-mingw32.txt -Dwerror=true \
    -Dc_args="-isystem$headers" -Dcjson_source="$cjson" >build-windows.setup.log 2>&1 ||
    { cat build-windows.setup.log; exit 1; }
fi
ninja -C build-windows >build-windows.build.log 2>&1 || { cat build-windows.build.log; exit 1; }
# Beside each program: the library (a Windows program finds its DLLs in its own folder), and
# winpthreads for the threads test's own threads.
for folder in tests cli examples bench; do cp build-windows/engine/libmoevk-1.dll build-windows/$folder/; done
cp /usr/x86_64-w64-mingw32/lib/libwinpthread-1.dll build-windows/tests/

export WINEDEBUG=-all WINEPREFIX=${WINEPREFIX:-$PWD/build-windows-wine}
wine=/usr/lib/wine/wine64
device=${MOEVK_DEVICE:-llvmpipe}
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
count() { # the "N passed, N failed" line in $log, added up; none is one failure
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 | tr -d '\r')
  if [ -z "$line" ]; then
    echo "(no result line: counted as one failure)"
    failed=$((failed + 1))
    return
  fi
  passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
  failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
}
under_wine() { # folder, program and arguments, with the environment given before
  (cd "build-windows/$1" && shift && timeout 1800 xvfb-run -a "$wine" "$@") 2>&1 |
    grep -v '^X connection' | tee "$log"
  return "${PIPESTATUS[0]}"
}
one() { # name, then what under_wine takes: one check from a program's exit status
  local name=$1; shift
  echo "== $name"
  if under_wine "$@"; then
    echo "ok   $name"; passed=$((passed + 1))
  else
    echo "FAIL $name"; failed=$((failed + 1))
  fi
}

# Every device test and the command-line tests, at both subgroup sizes. test_golden holds the
# Windows build to the bits the Linux build recorded (tests/golden_routes.txt).
tests="test_api test_interface test_projection test_safetensors test_gguf test_quant test_routing
       test_noise test_losses test_history test_modes test_sizes test_golden test_layer
       test_layer_backward test_layer_train test_token_scores test_profile test_record test_layer_record test_threads test_faults"
for subgroup in 8 4; do
  width=256
  [ "$subgroup" = 4 ] && width=128
  common=(MOEVK_DEVICE="$device" MOEVK_TEST_VALIDATION=0 LP_NATIVE_VECTOR_WIDTH=$width)
  [ "$device" = llvmpipe ] && common+=(MOEVK_TEST_EXPECT_SUBGROUP=$subgroup)
  for t in $tests; do
    echo "== $t.exe under Wine, lavapipe subgroup size $subgroup"
    (export "${common[@]}"; under_wine tests "$t.exe")
    count
  done
  for t in test_cli test_layer_cli; do
    echo "== $t.exe under Wine, lavapipe subgroup size $subgroup"
    (export "${common[@]}"; under_wine tests "$t.exe" '..\cli\moevk.exe')
    count
  done
done

export MOEVK_DEVICE="$device"
# The main job, the examples and a short benchmark, as a Windows user runs them.
echo "== moevk.exe demo"
if under_wine cli moevk.exe demo && grep -q '^demo: ok' "$log"; then
  echo "ok   moevk.exe demo"; passed=$((passed + 1))
else
  echo "FAIL moevk.exe demo"; failed=$((failed + 1))
fi
for e in minimal moe_layer routing_modes shared_device; do
  one "example $e.exe" examples "$e.exe"
done
one "moevk-bench.exe, one routing case and one layer case" bench moevk-bench.exe \
  --case 1024,8,2,64 --layer-case 64,8,2,64,128 --repeat 3 --warmup 1
# No driver: a clear error and exit status 1. The loader under Wine is Linux's, which reads its
# driver list from the environment wine starts with (test_cli cannot set it from inside).
echo "== moevk.exe demo without a Vulkan driver"
if (export VK_DRIVER_FILES=/nonexistent.json VK_ICD_FILENAMES=/nonexistent.json
    under_wine cli moevk.exe demo >/dev/null); then
  status=0
else
  status=$?
fi
if [ "$status" = 1 ] && grep -q 'no Vulkan device.*MOEVK_ERROR_NO_DEVICE' "$log"; then
  echo "ok   moevk.exe demo without a Vulkan driver"; passed=$((passed + 1))
else
  echo "FAIL moevk.exe demo without a Vulkan driver (exit status $status)"; cat "$log"
  failed=$((failed + 1))
fi
# How applications link it: the DLL and the static library, from gcc and from CMake.
echo "== Windows consumers"
tests/check_windows_consumers.sh build-windows "$headers" 2>&1 | tee "$log"
count

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
