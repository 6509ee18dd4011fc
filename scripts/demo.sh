#!/usr/bin/env bash
# Runs the cmojo demo: the simulator (tools/sim) in --demo mode. Builds
# build/plain first if it is missing or out of date. Extra arguments go to sim.
# Build output goes to stderr, so stdout is the demo's own.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# The simulator is tools/sim.c or tools/sim/*.c (see cmojo_add_programs).
if [ ! -e tools/sim.c ] && ! compgen -G 'tools/sim/*.c' >/dev/null; then
    echo "demo: tools/sim is not in this tree yet, so there is no demo to run" >&2
    exit 1
fi

bash scripts/setup.sh >&2
if [ ! -f build/plain/build.ninja ]; then
    cmojo_configure plain >&2
fi
cmake --build build/plain --target tool_sim >&2
exec build/plain/tools/sim --demo "$@"
