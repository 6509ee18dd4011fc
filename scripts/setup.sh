#!/usr/bin/env bash
# Installs what building and testing cmojo needs, from Debian's packages.
#
# Idempotent and quiet when nothing is missing: it asks dpkg what is installed
# and touches apt (and the network) only for what is not. Non-interactive and
# safe with no stdin (CI). Needs root, or password-less sudo, only when it
# actually has something to install.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# binutils: nm (export test); util-linux: setarch (TSan on high-ASLR kernels);
# libc6-dev: gcc only recommends it; clang-format: the format stage.
packages=(cmake ninja-build pkg-config libcmocka-dev clang clang-format gcc libc6-dev binutils
    util-linux)

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo -n)
    fi
fi

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        echo "setup: apt-get update"
        "${sudo_cmd[@]}" apt-get update -q </dev/null
        apt_updated=1
    fi
}

apt_install() {
    echo "setup: installing $*"
    "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "$@" </dev/null
}

missing=()
for p in "${packages[@]}"; do
    is_installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_update_once
    apt_install "${missing[@]}"
fi

# Sanitizer and libFuzzer runtimes: libclang-rt-<major>-dev where Debian splits
# them out of clang (Debian 12 does); older releases ship them inside clang.
clang_major=$(clang -dumpversion | cut -d. -f1)
rt=libclang-rt-${clang_major}-dev
if ! is_installed "$rt"; then
    apt_update_once
    candidate=$(apt-cache policy "$rt" 2>/dev/null | awk '/Candidate:/ { print $2 }')
    if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
        apt_install "$rt"
    else
        echo "setup: no package $rt here; assuming clang $clang_major ships its sanitizer runtimes"
    fi
fi

# Fail here, with a clear message, rather than halfway through a build.
for tool in cmake ninja pkg-config gcc clang nm; do
    command -v "$tool" >/dev/null 2>&1 || { echo "setup: $tool still missing" >&2; exit 1; }
done
pkg-config --exists cmocka || { echo "setup: cmocka not visible to pkg-config" >&2; exit 1; }
echo "setup: all build and test dependencies present"
