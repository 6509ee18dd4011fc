#!/usr/bin/env bash
# Installs the build into a temporary prefix and checks it is usable the way
# the README says: build examples/hello.c with the flags pkg-config gives for
# cmojo, once against libcmojo.so and once against libcmojo.a, and run both.
# The temporary prefix is removed however the script ends.
#
# usage: check_install.sh CMAKE BUILD_DIR HELLO_C CC [EXTRA_CFLAGS]
#   EXTRA_CFLAGS: one string, split on spaces (sanitizer builds pass theirs).
set -euo pipefail

cmake=$1 build=$2 hello=$3 cc=$4 extra=${5:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" ||
    { cat "$tmp/install.log"; echo "FAIL: cmake --install"; exit 1; }

pcdir=$(dirname "$(find "$prefix" -name cmojo.pc -print -quit)")
[ -f "$pcdir/cmojo.pc" ] || { echo "FAIL: cmojo.pc not installed"; exit 1; }
libdir=$(PKG_CONFIG_PATH=$pcdir pkg-config --variable=libdir cmojo)
for f in "$prefix/include/mojo/public/c/system/core.h" "$libdir/libcmojo.so" "$libdir/libcmojo.a"; do
    [ -e "$f" ] || { echo "FAIL: $f not installed"; exit 1; }
done

# shellcheck disable=SC2086 # word splitting of the flag strings is wanted
{
    cflags=$(PKG_CONFIG_PATH=$pcdir pkg-config --cflags cmojo)
    libs=$(PKG_CONFIG_PATH=$pcdir pkg-config --libs cmojo)
    # --static adds Libs.private (-lpthread); -l:libcmojo.a makes the linker
    # take the archive even though libcmojo.so sits beside it.
    static_libs=$(PKG_CONFIG_PATH=$pcdir pkg-config --static --libs cmojo | sed 's/-lcmojo\b/-l:libcmojo.a/')
    echo "pkg-config: cflags='$cflags' libs='$libs' static='$static_libs'"

    "$cc" $extra -Wall -Wextra -Werror -o "$tmp/hello_shared" "$hello" $cflags $libs
    "$cc" $extra -Wall -Wextra -Werror -o "$tmp/hello_static" "$hello" $cflags $static_libs
}
# (ldd's output is captured first: `ldd | grep -q` would let grep's early exit
# SIGPIPE ldd, and pipefail would then turn a match into a failure at random.)
static_deps=$(ldd "$tmp/hello_static")
if grep -q libcmojo <<<"$static_deps"; then
    echo "$static_deps"
    echo "FAIL: hello_static is linked against the shared libcmojo"
    exit 1
fi

# The shared build must resolve libcmojo from the installed prefix, not the build tree.
shared_deps=$(LD_LIBRARY_PATH=$libdir ldd "$tmp/hello_shared")
if ! grep -qF "$libdir/libcmojo.so" <<<"$shared_deps"; then
    echo "$shared_deps"
    echo "FAIL: hello_shared does not load libcmojo.so from $libdir"
    exit 1
fi
LD_LIBRARY_PATH=$libdir "$tmp/hello_shared"
"$tmp/hello_static"
echo "ok: installed headers, libcmojo.so, libcmojo.a and cmojo.pc work"
