#!/usr/bin/env bash
# The Windows build (MinGW-w64, cross/x86_64-w64-mingw32.txt) and its tests under Wine on
# lavapipe: Wine's winevulkan forwards vulkan-1.dll to this machine's loader, and needs a display
# driver, hence xvfb-run. Runs the device tests ported so far at lavapipe's subgroup sizes 8 and 4;
# the validation layer does not exist inside Wine, so these runs check results only (the Linux
# runs check validation and synchronization). Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
# The Vulkan headers and volk are the same files for every system: the cross compiler sees them
# through a folder of links to Debian's (nothing copied, nothing vendored).
headers=$PWD/build-windows-headers
mkdir -p "$headers"
for h in vulkan vk_video volk.h volk.c; do ln -sfn "/usr/include/$h" "$headers/$h"; done
if [ ! -f build-windows/build.ninja ]; then
  meson setup build-windows --cross-file cross/x86_64-w64-mingw32.txt -Dwerror=true \
    -Dc_args="-isystem$headers" >build-windows.setup.log 2>&1 || { cat build-windows.setup.log; exit 1; }
fi
ninja -C build-windows >build-windows.build.log 2>&1 || { cat build-windows.build.log; exit 1; }
# Beside the tests: the library, and winpthreads for the threads test's own threads.
cp build-windows/engine/libmoevk-1.dll /usr/x86_64-w64-mingw32/lib/libwinpthread-1.dll \
  build-windows/tests/
cp build-windows/engine/libmoevk-1.dll build-windows/cli/

export WINEDEBUG=-all WINEPREFIX=${WINEPREFIX:-$PWD/build-windows-wine}
wine=/usr/lib/wine/wine64
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Ported so far (tests/meson.build builds these for Windows); not yet: test_faults and the
# command-line tests. test_golden holds the Windows build to the bits the Linux build recorded
# (tests/golden_routes.txt).
tests="test_api test_interface test_projection test_quant test_routing test_noise test_losses
       test_history test_modes test_sizes test_golden test_layer test_token_scores test_profile
       test_threads"
for subgroup in 8 4; do
  width=256
  [ "$subgroup" = 4 ] && width=128
  for t in $tests; do
    echo "== $t.exe under Wine, lavapipe subgroup size $subgroup"
    (cd build-windows/tests && MOEVK_DEVICE=${MOEVK_DEVICE:-llvmpipe} MOEVK_TEST_VALIDATION=0 \
      MOEVK_TEST_EXPECT_SUBGROUP=$subgroup LP_NATIVE_VECTOR_WIDTH=$width \
      timeout 1800 xvfb-run -a "$wine" "$t.exe") 2>&1 | grep -v '^X connection' | tee "$log"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 | tr -d '\r')
    if [ -z "$line" ]; then
      echo "(no result line: counted as one failure)"
      failed=$((failed + 1))
      continue
    fi
    passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
    failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
  done
done
# The command line's demo (the main job) on Windows.
echo "== moevk.exe demo under Wine"
if (cd build-windows/cli && MOEVK_DEVICE=${MOEVK_DEVICE:-llvmpipe} timeout 900 \
      xvfb-run -a "$wine" moevk.exe demo) 2>&1 | grep -v '^X connection' | tee "$log" &&
    grep -q '^demo: ok' "$log"; then
  echo "ok   moevk.exe demo"
  passed=$((passed + 1))
else
  echo "FAIL moevk.exe demo"
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
