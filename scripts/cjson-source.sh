#!/usr/bin/env bash
# Debian's cJSON source package, for the Windows build: Debian ships cJSON built for Linux only
# (libcjson-dev), so the MinGW build compiles the same release, with Debian's patches applied, from
# its source package. apt fetches it (signatures checked against Debian's keyring) with a private
# list folder: the machine's own apt configuration is not touched. Prints the unpacked folder.
set -euo pipefail
cd "$(dirname "$0")/.."
deps=$PWD/build-windows-deps
version=$(dpkg-query -W -f='${Version}' libcjson-dev)
upstream=${version%%-*}
# Named cjson, so that its parent on the include path gives <cjson/cJSON.h> as on Linux.
folder=$deps/source/cjson
if [ -f "$folder/cJSON.c" ] && [ "$(cat "$deps/cjson.version" 2>/dev/null)" = "$version" ]; then
  echo "$folder"
  exit 0
fi
rm -rf "$deps"
mkdir -p "$deps/apt/lists/partial" "$deps/apt/cache/archives/partial"
# Debian 12's source suites (the release moevk builds on; setup.sh installs from the same).
cat >"$deps/apt/sources.list" <<SOURCES
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm-updates main
deb-src http://deb.debian.org/debian-security bookworm-security main
SOURCES
apt_options=(-q -o "Dir::Etc::SourceList=$deps/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
             -o "Dir::State::Lists=$deps/apt/lists" -o "Dir::Cache=$deps/apt/cache"
             -o "Debug::NoLocking=1" -o "APT::Sandbox::User=$(id -un)")
apt-get "${apt_options[@]}" update >"$deps/apt.log" 2>&1 || { cat "$deps/apt.log" >&2; exit 1; }
(cd "$deps" && apt-get "${apt_options[@]}" source "cjson=$version" >>"$deps/apt.log" 2>&1) ||
  { cat "$deps/apt.log" >&2; exit 1; }
[ -f "$deps/cjson-$upstream/cJSON.c" ] || { echo "cjson-source: no cJSON.c in $deps" >&2; exit 1; }
mkdir -p "$deps/source"
mv "$deps/cjson-$upstream" "$folder"
echo "$version" >"$deps/cjson.version"
echo "$folder"
