# Sourced by scripts/test.sh and scripts/demo.sh: the one place that says how
# each build tree under build/ is configured.

CMOJO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# cmojo_describe NAME: one line saying what build/NAME is.
cmojo_describe() {
    case $1 in
    plain) echo "gcc, RelWithDebInfo, asserts on" ;;
    asan) echo "clang, AddressSanitizer + UndefinedBehaviorSanitizer" ;;
    tsan) echo "clang, ThreadSanitizer" ;;
    fuzz) echo "clang, libFuzzer + ASan + UBSan" ;;
    release) echo "gcc -O3 and clang -O3, Release, asserts off: compile only" ;;
    format) echo "clang-format --dry-run over every tracked .c and .h" ;;
    release-gcc) echo "gcc, Release (-O3), asserts off" ;;
    release-clang) echo "clang, Release (-O3), asserts off" ;;
    *) echo "unknown build" ;;
    esac
}

# cmojo_configure NAME: configures (or refreshes) build/NAME with Ninja.
#   plain  gcc, RelWithDebInfo with assert() kept (CMOJO_ASSERTS, default ON)
#   asan   clang, CMOJO_SANITIZE=address (ASan + UBSan, no recovery)
#   tsan   clang, CMOJO_SANITIZE=thread
#   fuzz   clang, CMOJO_FUZZ=ON (libFuzzer binaries; ASan + UBSan throughout)
#   release-gcc, release-clang   Release (-O3 -DNDEBUG), CMOJO_ASSERTS=OFF: the
#          optimiser's own warnings (-Wrestrict, -Wmaybe-uninitialized ...) and
#          variables only read by assert() show up only here
cmojo_configure() {
    local name=$1 type=RelWithDebInfo
    local -a args
    case $name in
    plain) args=(-DCMAKE_C_COMPILER=gcc -DCMOJO_SANITIZE= -DCMOJO_FUZZ=OFF) ;;
    asan) args=(-DCMAKE_C_COMPILER=clang -DCMOJO_SANITIZE=address -DCMOJO_FUZZ=OFF) ;;
    tsan) args=(-DCMAKE_C_COMPILER=clang -DCMOJO_SANITIZE=thread -DCMOJO_FUZZ=OFF) ;;
    fuzz) args=(-DCMAKE_C_COMPILER=clang -DCMOJO_SANITIZE=address -DCMOJO_FUZZ=ON) ;;
    release-gcc | release-clang)
        type=Release
        args=(-DCMAKE_C_COMPILER="${name#release-}" -DCMOJO_SANITIZE= -DCMOJO_FUZZ=OFF
            -DCMOJO_ASSERTS=OFF)
        ;;
    *)
        echo "cmojo_configure: unknown build '$name' (plain, asan, tsan, fuzz, release-gcc or release-clang)" >&2
        return 1
        ;;
    esac
    cmake -G Ninja -S "$CMOJO_ROOT" -B "$CMOJO_ROOT/build/$name" \
        -DCMAKE_BUILD_TYPE="$type" "${args[@]}"
}
