#!/usr/bin/env bash
# Runs the cmojo demo: examples/demo.c, a program using message pipes, traps,
# quotas and MojoWait through the public API and the shared library.
#   scripts/demo.sh          the pipes-and-traps demo
#   scripts/demo.sh --sim    the ports-layer simulator's narrated demo instead
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
cmake --build build/plain --target example_demo >&2
exec build/plain/examples/demo "$@"
