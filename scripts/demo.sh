#!/usr/bin/env bash
# Runs the cmojo demo through the public API and the shared library.
#   scripts/demo.sh          the multi-process demo (examples/multiprocess.c):
#                            a broker and two children that find each other
#                            through pipes passed in messages and exchange
#                            messages and a file descriptor
#   scripts/demo.sh --local  the one-process tour (examples/demo.c): pipes,
#                            traps, MojoWait, quotas
#   scripts/demo.sh --sim    the ports-layer simulator's narrated demo
#                            (further arguments go to tools/sim)
# Builds build/plain first if it is missing or out of date. Build output goes
# to stderr, so stdout is the demo's own.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

bash scripts/setup.sh >&2
if [ ! -f build/plain/build.ninja ]; then
    cmojo_configure plain >&2
fi
if [ "${1:-}" = "--sim" ]; then
    shift
    cmake --build build/plain --target tool_sim >&2
    exec build/plain/tools/sim --demo "$@"
fi
if [ "${1:-}" = "--local" ]; then
    shift
    cmake --build build/plain --target example_demo >&2
    exec build/plain/examples/demo "$@"
fi
cmake --build build/plain --target example_multiprocess >&2
exec build/plain/examples/multiprocess "$@"
