#!/usr/bin/env bash
# The package step: makes sure every command that nuage's tests and main job run is on PATH,
# installing the Debian packages that carry the missing ones in one apt transaction.
# Decides by the commands themselves, never by what dpkg says is installed: a package can be
# "installed" while its command is gone, or apt can remove one package to make room for
# another. QEMU's packages are installed together at one version (the one apt offers for
# qemu-system-x86), downgrading a newer qemu-utils from another suite rather than letting
# apt remove it; apt is told never to remove anything.
#
# Usage: scripts/deps.sh [--check]
#   --check (or NUAGE_DEPS_INSTALL=0): install nothing, only check.
# Exit status 0 when every command is there; 1 with one line naming what is missing.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

# command  Debian package   (one line each; the README's set-up lists the same packages)
REQUIRED_COMMANDS="
qemu-img            qemu-utils
qemu-io             qemu-utils
qemu-system-x86_64  qemu-system-x86
mkfs.ext4           e2fsprogs
debugfs             e2fsprogs
nft                 nftables
ip                  iproute2
pgrep               procps
busybox             busybox-static
cpio                cpio
lz4                 lz4
dropbear            dropbear-bin
dropbearkey         dropbear-bin
ssh                 openssh-client
ssh-keygen          openssh-client
openssl             openssl
curl                curl
mmdebstrap          mmdebstrap
mkfs.fat            dosfstools
fsck.fat            dosfstools
mcopy               mtools
sfdisk              fdisk
xz                  xz-utils
zstd                zstd
gzip                gzip
g++                 g++
tar                 tar
sha256sum           coreutils
"
# Built from one source and installed at one version.
QEMU_PACKAGES="qemu-system-x86 qemu-utils"

install=${NUAGE_DEPS_INSTALL:-1}
case "${1:-}" in
    --check) install=0 ;;
    "") ;;
    *) die "usage: $0 [--check]" ;;
esac

# Prints "command package" for each required command that is not usable from PATH. The
# test guest's busybox is copied into initramfs images, so it must be statically linked.
missing_commands() {
    local command package path
    while read -r command package; do
        [ -n "$command" ] || continue
        if ! path=$(command -v "$command"); then
            echo "$command $package"
        elif [ "$command" = busybox ] && ldd "$path" >/dev/null 2>&1; then
            echo "$command $package"
        fi
    done <<< "$REQUIRED_COMMANDS"
}

# The version apt would install of $1.
candidate_version() {
    apt-cache policy "$1" | awk '/Candidate:/ {print $2; exit}'
}

# install_packages PACKAGE...: one apt transaction; QEMU's packages pinned to one version.
install_packages() {
    local sudo="" packages=() p qemu=0 version
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    [ -z "$sudo" ] || command -v sudo >/dev/null || return 1
    command -v apt-get >/dev/null || return 1
    for p in "$@"; do
        [[ " $QEMU_PACKAGES " == *" $p "* ]] && qemu=1 || packages+=("$p")
    done
    log "installing $* (apt-get)"
    $sudo apt-get update -q >/dev/null || return 1
    if [ "$qemu" -eq 1 ]; then
        version=$(candidate_version qemu-system-x86)
        [ -n "$version" ] && [ "$version" != "(none)" ] || return 1
        for p in $QEMU_PACKAGES; do packages+=("$p=$version"); done
    fi
    # --reinstall: a package dpkg calls installed may still have lost its command.
    local output
    output=$(DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends \
        --reinstall --allow-downgrades --no-remove "${packages[@]}" 2>&1) \
        || { tail -20 <<< "$output" >&2; return 1; }
}

missing=$(missing_commands)
if [ -n "$missing" ] && [ "$install" != 0 ]; then
    install_packages $(awk '{print $2}' <<< "$missing" | sort -u) \
        || log "installing packages failed; checking what is there"
    missing=$(missing_commands)
fi
if [ -n "$missing" ]; then
    die "missing $(awk '{printf "%s%s (Debian package %s)", (NR > 1 ? ", " : ""), $1, $2}' <<< "$missing")"
fi
