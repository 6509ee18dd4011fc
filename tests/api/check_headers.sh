#!/usr/bin/env bash
# Every public header compiles on its own (it includes what it uses), as strict
# ISO C11 with -Wpedantic, and -- when a C++ compiler is installed -- as C++11,
# since Mojo's C headers are also consumed from C++.
#
# usage: check_headers.sh CC INCLUDE_DIR
set -euo pipefail

cc=$1 include_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cxx=$(command -v c++ || true)
count=0 status=0
for header in "$include_dir"/mojo/public/c/system/*.h "$include_dir"/cmojo/*.h; do
    rel=${header#"$include_dir"/}
    # The int keeps headers that define only macros from being an empty unit.
    printf '#include "%s"\nint cmojo_header_check;\n' "$rel" >"$work/t.c"
    if ! "$cc" -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$include_dir" "$work/t.c"; then
        echo "FAIL: $rel does not compile alone as C11"
        status=1
    fi
    if [ -n "$cxx" ] && ! "$cxx" -std=c++11 -Wall -Wextra -Werror -fsyntax-only -x c++ \
        -I"$include_dir" "$work/t.c"; then
        echo "FAIL: $rel does not compile alone as C++11"
        status=1
    fi
    count=$((count + 1))
done
if [ "$count" -eq 0 ]; then
    echo "FAIL: no headers found under $include_dir/mojo/public/c/system"
    exit 1
fi
[ -n "$cxx" ] || echo "note: no C++ compiler installed; checked C only"
[ "$status" -ne 0 ] || echo "ok: $count public headers compile on their own"
exit "$status"
