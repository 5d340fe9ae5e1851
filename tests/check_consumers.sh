#!/usr/bin/env bash
# How moevk is consumed: its examples, installed (shared and static, found through pkg-config and
# through its CMake package), as a meson subproject, and its header from C11 and C++ at -Wall -Wextra -Wpedantic -Werror. Each check
# builds examples/minimal.c (or a header-only file) and runs it on the default device.
# Usage: tests/check_consumers.sh BUILD_DIR. Ends with "N passed, N failed".
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
. "$root/tests/checks.sh"

meson install -C "$build" --destdir "$tmp/root" --quiet >/dev/null 2>&1
pc=$(find "$tmp/root" -name moevk.pc | head -n 1)
libdir=$(dirname "$(dirname "$pc")")
# Installed under a staging root: point the .pc's prefix there (as a package would).
prefix=$(sed -n 's/^prefix=//p' "$pc")
sed -i "s|^prefix=.*|prefix=$tmp/root$prefix|" "$pc"
export PKG_CONFIG_PATH=$(dirname "$pc")
pkg() { pkg-config "$@" moevk; }

installed_shared() {
  cc -std=c11 "${strict[@]}" "$root/examples/minimal.c" $(pkg --cflags --libs) -o "$tmp/minimal_shared" &&
    LD_LIBRARY_PATH="$libdir" "$tmp/minimal_shared"
}
installed_static_beside_libvulkan() {
  # The static library and the system loader in one program that calls both: no symbol may
  # clash (volk's pointers are named like Vulkan's functions).
  cat >"$tmp/both.c" <<'C'
#include <vulkan/vulkan.h>
#include <moevk.h>
int main(void) {
    uint32_t version = 0;
    if (vkEnumerateInstanceVersion(&version) != VK_SUCCESS || version < VK_API_VERSION_1_2) return 1;
    moevk_context *context = NULL;
    if (moevk_context_create(NULL, &context) != MOEVK_SUCCESS) return 2;
    moevk_context_destroy(context);
    return 0;
}
C
  cc -std=c11 "${strict[@]}" "$tmp/both.c" $(pkg --cflags) "$libdir/libmoevk.a" \
    $(pkg --static --libs-only-l | sed 's/-lmoevk//') -lvulkan -o "$tmp/both_static" &&
    "$tmp/both_static" && ! nm "$libdir/libmoevk.a" | grep -E ' [TDB] ' | grep -v ' moevk_'
}
header_as_cxx() {
  printf '#include <moevk.h>\nint main() { return moevk_version_number() == MOEVK_VERSION_NUMBER ? 0 : 1; }\n' >"$tmp/h.cpp"
  c++ -std=c++11 "${strict[@]}" $(pkg --cflags) "$tmp/h.cpp" $(pkg --libs) -o "$tmp/h_cxx" &&
    LD_LIBRARY_PATH="$libdir" "$tmp/h_cxx"
}
header_as_c11() {
  printf '#include <moevk.h>\nint main(void) { return moevk_version_number() == MOEVK_VERSION_NUMBER ? 0 : 1; }\n' >"$tmp/h.c"
  cc -std=c11 "${strict[@]}" $(pkg --cflags) "$tmp/h.c" $(pkg --libs) -o "$tmp/h_c" &&
    LD_LIBRARY_PATH="$libdir" "$tmp/h_c"
}
versioned_soname() {
  readelf -d "$libdir/libmoevk.so" | grep -q "SONAME.*libmoevk.so.[0-9]"
}
subproject() {
  mkdir -p "$tmp/consumer/subprojects" &&
    ln -s "$root" "$tmp/consumer/subprojects/moevk" &&
    cp "$root/examples/minimal.c" "$tmp/consumer/" &&
    cat >"$tmp/consumer/meson.build" <<'MESON' &&
project('consumer', 'c', default_options : ['c_std=c11'])
moevk = dependency('moevk', fallback : ['moevk', 'moevk_dep'])
executable('minimal', 'minimal.c', dependencies : moevk)
MESON
    meson setup "$tmp/consumer/build" "$tmp/consumer" --force-fallback-for=moevk >/dev/null &&
    ninja -C "$tmp/consumer/build" >/dev/null &&
    "$tmp/consumer/build/minimal"
}

# A CMake project against the installed tree: find_package(moevk) and both imported targets.
cmake_consumer() { # target
  local dir="$tmp/cmake_$1"
  mkdir -p "$dir" && cp "$root/examples/minimal.c" "$dir/" &&
    cat >"$dir/CMakeLists.txt" <<CMAKE &&
cmake_minimum_required(VERSION 3.16)
project(consumer C)
set(CMAKE_C_STANDARD 11)
find_package(moevk 0.6 REQUIRED)
add_executable(minimal minimal.c)
target_link_libraries(minimal PRIVATE moevk::$1)
CMAKE
    cmake -S "$dir" -B "$dir/build" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/root$prefix" >/dev/null &&
    ninja -C "$dir/build" >/dev/null &&
    LD_LIBRARY_PATH="$libdir" "$dir/build/minimal"
}
cmake_too_new() { # asking for a later major version is refused
  local dir="$tmp/cmake_new"
  mkdir -p "$dir" && printf 'cmake_minimum_required(VERSION 3.16)\nproject(c C)\nfind_package(moevk 1.0 REQUIRED)\n' >"$dir/CMakeLists.txt" &&
    ! cmake -S "$dir" -B "$dir/build" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/root$prefix" >/dev/null 2>&1
}

check "example minimal routes a batch" "$build/examples/minimal"
check "example moe_layer matches the dense layer" "$build/examples/moe_layer"
check "example shared_device records into the application's command buffer" "$build/examples/shared_device"
check "example routing_modes balances and chooses" "$build/examples/routing_modes"
check "installed shared library through pkg-config" installed_shared
check "installed static library beside libvulkan, only moevk_ symbols global" installed_static_beside_libvulkan
check "header compiles as C11 with -Wpedantic" header_as_c11
check "header compiles as C++ with -Wpedantic" header_as_cxx
check "shared library has a versioned soname" versioned_soname
check "works as a meson subproject" subproject
check "a CMake project links moevk::moevk and routes a batch" cmake_consumer moevk
check "a CMake project links moevk::moevk_static and routes a batch" cmake_consumer moevk_static
check "the CMake package refuses a later major version" cmake_too_new
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
