#!/usr/bin/env bash
# Turns an archive of moevk's objects into a static library of one relocatable object whose
# hidden symbols are local: only moevk_* stays global. Usage: localize_static.sh IN.a OUT.a
set -euo pipefail
in=$1
out=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ld -r --whole-archive "$in" -o "$tmp/moevk.o"
objcopy --localize-hidden "$tmp/moevk.o"
rm -f "$out"
ar rcs "$out" "$tmp/moevk.o"
