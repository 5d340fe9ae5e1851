#!/usr/bin/env bash
# Installs, from Debian's packages, whatever moevk needs to build and test that is not there yet.
# Does nothing (and needs no root) when everything is installed already.
set -euo pipefail
packages=(libvulkan-dev libvulkan-volk-dev glslang-tools spirv-tools mesa-vulkan-drivers
          vulkan-validationlayers meson ninja-build pkg-config gcc g++ binutils python3
          clang libclang-rt-14-dev libcjson-dev cmake
          libopenmpi-dev openmpi-bin \
          gcc-mingw-w64-x86-64 g++-mingw-w64-x86-64 wine64 xvfb xauth dpkg-dev) # MPI expert parallelism; the Windows build under Wine
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "setup: installing ${missing[*]}" >&2
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q >/dev/null
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
