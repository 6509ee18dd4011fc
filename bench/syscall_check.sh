#!/bin/sh
# Checks that a message write+read on a pipe makes no system call, by counting
# under strace the calls bench_core --syscall-check makes between its getppid()
# markers. (bench_core counts the same windows itself with seccomp on every
# run; this is the check that needs nothing but strace.)
#
# Usage: bench/syscall_check.sh [path/to/bench_core] [ops per window]
# Exit status: 0 when every write+read window made no call, 1 when one did,
# 2 when the check could not run (no strace, no binary, strace failed).
set -eu

bin=${1:-build/rel/bench/bench_core}
ops=${2:-2000}

if ! command -v strace >/dev/null 2>&1; then
    echo "syscall_check: strace is not installed, so nothing was checked" >&2
    echo "  (Debian/Ubuntu: apt-get install strace)" >&2
    exit 2
fi
if [ ! -x "$bin" ]; then
    echo "syscall_check: no executable '$bin'; build bench_core first, e.g." >&2
    echo "  cmake -G Ninja -B build/rel -DCMAKE_BUILD_TYPE=Release && ninja -C build/rel bench_core" >&2
    exit 2
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT INT TERM

# -f: follow threads too, so no call can hide on another thread.
if ! strace -f -qq -o "$dir/trace" "$bin" --syscall-check --iterations "$ops" >"$dir/labels"; then
    echo "syscall_check: '$bin --syscall-check' failed under strace" >&2
    exit 2
fi

# A window is everything between a getppid() line and the next one. strace
# prints every call (and any signal) as one line per thread; a call split by
# another thread's ("<unfinished ...>" / "<... resumed>") would show as two
# lines, which can only overcount.
awk -v labels="$dir/labels" '
    BEGIN {
        while ((getline line < labels) > 0)
            if (line ~ /^window: /) { n++; label[n] = substr(line, 9) }
            else if (line ~ /^ops per window: /) ops = substr(line, 17)
    }
    / getppid\(/ {
        if (inside) { count[w] = c; inside = 0 } else { w++; inside = 1; c = 0 }
        next
    }
    inside { c++; if (shown[w]++ < 5) first[w] = first[w] "    " $0 "\n" }
    END {
        if (w != n || inside) {
            printf "syscall_check: found %d marker windows, expected %d\n", w, n
            exit 2
        }
        bad = 0
        for (i = 1; i <= n; i++) {
            printf "%-28s %6d system calls in %s ops\n", label[i], count[i], ops
            if (count[i]) printf "%s", first[i]
            if (count[i] && label[i] ~ /^write\+read/) bad = 1
        }
        if (bad) { print "FAIL: a write+read window made system calls"; exit 1 }
        print "OK: write+read made no system call"
    }
' "$dir/trace"
