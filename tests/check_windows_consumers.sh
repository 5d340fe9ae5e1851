#!/usr/bin/env bash
# How a Windows application consumes moevk, checked on the MinGW build under Wine: the installed
# DLL through its import library and the static library (MOEVK_STATIC), each from a plain
# compiler line and from a CMake project (cross/x86_64-w64-mingw32.cmake, find_package(moevk)),
# the header as C11 and C++ with -Wpedantic, and the DLL exporting moevk's functions only. Each
# program is examples/minimal.c, run under Wine on the default device.
# Usage: tests/check_windows_consumers.sh BUILD_DIR HEADERS_DIR. Ends with "N passed, N failed".
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
headers=$2
. "$root/tests/checks.sh"
cc=x86_64-w64-mingw32-gcc
wine_run() { # folder, program: runs it there beside the DLL, as a Windows program finds it
  (cd "$1" && timeout 600 xvfb-run -a /usr/lib/wine/wine64 "$2") 2>&1 | grep -v '^X connection'
  return "${PIPESTATUS[0]}"
}

meson install -C "$build" --destdir "$tmp/root" --quiet >/dev/null 2>&1
prefix=$tmp/root$(meson introspect --buildoptions "$build" |
  python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
include=$prefix/include
lib=$prefix/lib
bin=$prefix/bin

dll_through_import_library() {
  mkdir -p "$tmp/shared" && cp "$bin/libmoevk-1.dll" "$tmp/shared/" &&
    $cc -std=c11 "${strict[@]}" -I"$include" -isystem"$headers" "$root/examples/minimal.c" \
      -L"$lib" -lmoevk -o "$tmp/shared/minimal.exe" &&
    wine_run "$tmp/shared" minimal.exe
}
static_library() {
  mkdir -p "$tmp/static" &&
    $cc -std=c11 "${strict[@]}" -DMOEVK_STATIC -I"$include" -isystem"$headers" \
      "$root/examples/minimal.c" "$lib/libmoevk_static.a" -o "$tmp/static/minimal.exe" &&
    ! x86_64-w64-mingw32-objdump -p "$tmp/static/minimal.exe" | grep -qi 'libmoevk' &&
    wine_run "$tmp/static" minimal.exe
}
header_as() { # compiler, standard, file suffix
  printf '#include <moevk.h>\nint main(void) { return moevk_version_number() == MOEVK_VERSION_NUMBER ? 0 : 1; }\n' \
    >"$tmp/h.$3"
  "$1" -std="$2" "${strict[@]}" -I"$include" -isystem"$headers" -c "$tmp/h.$3" -o "$tmp/h_$3.o"
}
exports_only_moevk() {
  # The DLL's export table lists moevk_ functions and nothing else (volk's pointers stay inside).
  x86_64-w64-mingw32-objdump -p "$bin/libmoevk-1.dll" |
    sed -n '/\[Ordinal\/Name Pointer\] Table/,/^$/p' | grep -E '^\s+\[' >"$tmp/exports" &&
    [ -s "$tmp/exports" ] && ! grep -v ' moevk_' "$tmp/exports"
}
cmake_consumer() { # target
  local dir="$tmp/cmake_$1"
  mkdir -p "$dir" && cp "$root/examples/minimal.c" "$dir/" &&
    cat >"$dir/CMakeLists.txt" <<CMAKE &&
cmake_minimum_required(VERSION 3.16)
project(consumer C)
set(CMAKE_C_STANDARD 11)
find_package(moevk 0.6 REQUIRED)
add_executable(minimal minimal.c)
target_include_directories(minimal SYSTEM PRIVATE "$headers")
target_link_libraries(minimal PRIVATE moevk::$1)
CMAKE
    cmake -S "$dir" -B "$dir/build" -G Ninja -DCMAKE_TOOLCHAIN_FILE="$root/cross/x86_64-w64-mingw32.cmake" \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_ROOT_PATH="$prefix" >/dev/null &&
    ninja -C "$dir/build" >/dev/null &&
    cp "$bin/libmoevk-1.dll" "$dir/build/" &&
    wine_run "$dir/build" minimal.exe
}

check "a program links the DLL through libmoevk.dll.a and routes a batch" dll_through_import_library
check "a program links libmoevk_static.a (MOEVK_STATIC), needs no DLL, routes a batch" static_library
check "header compiles as C11 with -Wpedantic for Windows" header_as "$cc" c11 c
check "header compiles as C++ with -Wpedantic for Windows" header_as x86_64-w64-mingw32-g++ c++11 cpp
check "the DLL exports moevk_ functions only" exports_only_moevk
check "a CMake project links moevk::moevk (the DLL) and routes a batch" cmake_consumer moevk
check "a CMake project links moevk::moevk_static and routes a batch" cmake_consumer moevk_static
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
