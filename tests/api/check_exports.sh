#!/usr/bin/env bash
# The shared library's dynamic symbol table must hold exactly the functions
# that the public headers declare with MOJO_SYSTEM_EXPORT: at least one, every
# one named Mojo*, none missing (a user would get a link error) and none extra
# (an internal symbol leaking into the ABI).
#
# usage: check_exports.sh LIBRARY CC INCLUDE_DIR
set -euo pipefail

lib=$1 cc=$2 include_dir=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

[ -f "$lib" ] || { echo "FAIL: no library at $lib"; exit 1; }

# Defined dynamic symbols: "ADDRESS TYPE NAME"; versioned names end in @...
nm -D --defined-only "$lib" | awk 'NF >= 3 { sub(/@.*/, "", $3); print $3 }' |
    sort -u >"$work/exported"

# Declarations as the library's own build sees them: with
# MOJO_SYSTEM_IMPLEMENTATION the marker becomes a visibility attribute, which
# we find in the preprocessed text (comments gone); the name is the last
# identifier before the opening parenthesis.
printf '#include "mojo/public/c/system/core.h"\n#include "cmojo/wait.h"\n' >"$work/all.c"
"$cc" -E -P -DMOJO_SYSTEM_IMPLEMENTATION -I"$include_dir" "$work/all.c" |
    tr '\n' ' ' |
    grep -oE 'visibility *\( *"default" *\) *\) *\)[^;{}()]*\(' |
    sed -E 's/^.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*) *\($/\1/' |
    sort -u >"$work/declared" || true

status=0
if [ ! -s "$work/exported" ]; then
    echo "FAIL: $lib exports no symbols at all"
    status=1
fi
if [ ! -s "$work/declared" ]; then
    echo "FAIL: found no MOJO_SYSTEM_EXPORT declarations under $include_dir"
    status=1
fi
if grep -v '^Mojo' "$work/exported" >"$work/bad"; then
    echo "FAIL: exported symbols not named Mojo*:"
    sed 's/^/  /' "$work/bad"
    status=1
fi
comm -13 "$work/exported" "$work/declared" >"$work/missing"
if [ -s "$work/missing" ]; then
    echo "FAIL: declared in the public headers but not exported:"
    sed 's/^/  /' "$work/missing"
    status=1
fi
comm -23 "$work/exported" "$work/declared" | grep '^Mojo' >"$work/extra" || true
if [ -s "$work/extra" ]; then
    echo "FAIL: exported but not declared in any public header:"
    sed 's/^/  /' "$work/extra"
    status=1
fi

if [ "$status" -eq 0 ]; then
    echo "ok: $(wc -l <"$work/exported") exported symbols, all declared Mojo* functions:"
    sed 's/^/  /' "$work/exported"
fi
exit "$status"
