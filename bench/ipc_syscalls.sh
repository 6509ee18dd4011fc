#!/bin/sh
# Counts the system calls per op of bench_ipc's cases, by thread, under strace.
#
# For each case, runs `bench_ipc --single KIND SIZE OPS` under strace -f: the
# parent's main thread calls getppid() just before and just after the timed
# loop, and every call any thread of either process makes between the two is
# counted (the parent's main thread, its IO thread, the child's main thread,
# the child's IO thread), by name, with calls that failed with EAGAIN shown
# apart. Divided by OPS: calls per round trip (or per streamed message).
#
# strace stops every call, so timing (and with it how many calls find nothing
# to do, e.g. recvmsg -> EAGAIN, or how many messages one wake-up gets) is
# not what it is at full speed; the counts for the lock-step round trips are
# steady, the stream counts are only indicative.
#
# Usage: bench/ipc_syscalls.sh [path/to/bench_ipc] [ops] [size] [kinds...]
#   defaults: build/rel/bench/bench_ipc, 2000 ops, 8 bytes, raw trap wait
#   kinds: raw trap wait rawstream stream
# Exit status: 0, or 2 when the count could not run (no strace, no binary,
# a run failed).
set -eu

bin=${1:-build/rel/bench/bench_ipc}
ops=${2:-2000}
size=${3:-8}
if [ $# -gt 3 ]; then
    shift 3
    kinds=$*
else
    kinds="raw trap wait"
fi

if ! command -v strace >/dev/null 2>&1; then
    echo "ipc_syscalls: strace is not installed, so nothing was counted" >&2
    exit 2
fi
if [ ! -x "$bin" ]; then
    echo "ipc_syscalls: no executable '$bin'; build it first, e.g." >&2
    echo "  cmake -G Ninja -B build/rel -DCMAKE_BUILD_TYPE=Release -DCMOJO_BUILD_TESTS=OFF" >&2
    echo "  ninja -C build/rel bench_ipc" >&2
    exit 2
fi

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT INT TERM

for kind in $kinds; do
    if ! strace -f -qq -o "$dir/trace" "$bin" --single "$kind" "$size" "$ops" >"$dir/out"; then
        echo "ipc_syscalls: '$bin --single $kind $size $ops' failed under strace" >&2
        exit 2
    fi
    ppid=$(sed -n 's/^parent pid: //p' "$dir/out")
    cpid=$(sed -n 's/^child pid: //p' "$dir/out")
    echo "== $kind, $size B, $ops ops (parent $ppid, child $cpid)"
    awk -v ppid="$ppid" -v cpid="$cpid" -v ops="$ops" '
        BEGIN { proc[ppid] = "parent"; proc[cpid] = "child" }
        # A new thread belongs to the process of the thread that cloned it.
        /(clone3?\(|<\.\.\. clone3? resumed>).*= [0-9]+$/ {
            if ($1 in proc && !($NF in proc)) proc[$NF] = proc[$1]
        }
        / getppid\(/ && $1 == ppid { inside = !inside; windows++; next }
        !inside { next }
        /resumed>/ || /^[0-9]+ (\+\+\+|---)/ { next }  # counted where it started
        {
            tid = $1
            name = $2
            sub(/\(.*/, "", name)
            if (name == "" || name ~ /^</) next
            who = (tid in proc) ? proc[tid] : "?"
            who = who ((tid == ppid || tid == cpid) ? " main" : " thread " tid)
            if ($0 ~ /= -1 EAGAIN/) name = name "(EAGAIN)"
            n[who SUBSEP name]++
            tot[who]++
            all++
        }
        END {
            if (windows != 2) { print "ipc_syscalls: expected 2 markers, found " windows; exit 2 }
            for (w in tot) {
                line = ""
                for (k in n) {
                    split(k, part, SUBSEP)
                    if (part[1] == w)
                        line = line sprintf(" %s %.2f", part[2], n[k] / ops)
                }
                printf "  %-22s %6.2f/op:%s\n", w, tot[w] / ops, line
            }
            printf "  %-22s %6.2f/op\n", "total", all / ops
        }
    ' "$dir/trace" | sort
done
