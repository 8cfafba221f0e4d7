#!/usr/bin/env bash
# Builds a Debian 12 (bookworm) cloud disk as users get one from the distribution, from
# Debian's package archive (main, updates, security) with mmdebstrap: a GPT disk whose one
# partition is an ext4 root with /boot holding the stock linux-image-cloud-amd64 kernel and
# its initrd, systemd, cloud-init, openssh-server, ifupdown, sudo and curl, all unmodified.
# nuage boots it as it is: `nuage register-image --disk debian-12.qcow2 --disk-format
# qcow2` finds the kernel and initrd in its /boot, and stock cloud-init configures it from
# the instance's NoCloud config drive (hostname, the key pair for user `debian`, user data,
# the static address). Trimmed of documentation, manual pages and translations (no program
# is left out), so the nested CI harness can carry it.
#
# Usage: images/debian-cloud/build.sh OUTPUT.qcow2
# The result is cached in $NUAGE_CACHE/debian-cloud/, keyed by this recipe and the
# day (a later day's build takes that day's security updates).
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib/common.sh"
out=${1:?usage: build.sh OUTPUT.qcow2}
need_deps

suite=bookworm
mirror=${NUAGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${NUAGE_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
packages=linux-image-cloud-amd64,systemd-sysv,udev,cloud-init,openssh-server,ifupdown,sudo,curl,e2fsprogs,netbase,iproute2,ca-certificates,locales
# The root file system's UUID and the partition's, fixed so that the disk is reproducible
# up to its packages.
fs_uuid=6e756167-6500-4000-8000-000000000001
part_uuid=6e756167-6500-4000-8000-000000000002
disk_mib=2048

key=$(sha256sum < "$0" | cut -c1-16)-$(date -u +%Y%m%d)
cache=$NUAGE_CACHE/debian-cloud/$key
if [ ! -s "$cache/disk.qcow2" ]; then
    log "building the Debian $suite cloud disk (mmdebstrap, $mirror)"
    rm -rf "$NUAGE_CACHE/debian-cloud" && mkdir -p "$cache"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    rootfs=$work/rootfs
    # Hooks: the root's fstab entry; no SSH host keys (cloud-init makes each instance its
    # own); en_US.UTF-8 generated, which cloud-init's locale module sets and update-locale
    # accepts only once generated; no package lists.
    mmdebstrap --quiet --variant=apt --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook='echo "UUID='"$fs_uuid"' / ext4 rw,discard,errors=remount-ro 0 1" > "$1/etc/fstab"' \
        --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
        --customize-hook='echo "en_US.UTF-8 UTF-8" > "$1/etc/locale.gen" && chroot "$1" locale-gen' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        "$suite" "$rootfs" "deb $mirror $suite main" "deb $mirror $suite-updates main" \
        "deb $security $suite-security main" >&2
    [ -n "$(ls "$rootfs"/boot/vmlinuz-* 2>/dev/null)" ] || die "the root file system has no /boot/vmlinuz-*"
    [ -n "$(ls "$rootfs"/boot/initrd.img-* 2>/dev/null)" ] || die "the root file system has no /boot/initrd.img-*"
    # One partition from 1 MiB to 1 MiB before the end (the backup GPT's room).
    part_mib=$((disk_mib - 2))
    mkfs.ext4 -q -F -L root -U "$fs_uuid" -d "$rootfs" "$work/root.ext4" "${part_mib}M"
    truncate -s "${disk_mib}M" "$work/disk.raw"
    printf 'label: gpt\nstart=2048, size=%d, type=L, uuid=%s, name=root\n' \
        $((part_mib * 2048)) "$part_uuid" | sfdisk --quiet "$work/disk.raw"
    dd if="$work/root.ext4" of="$work/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
    qemu-img convert -c -f raw -O qcow2 "$work/disk.raw" "$cache/disk.qcow2.tmp"
    mv "$cache/disk.qcow2.tmp" "$cache/disk.qcow2"
    log "built $(du -h "$cache/disk.qcow2" | cut -f1) ($(du -sh "$rootfs" | cut -f1) of files)"
fi
cp "$cache/disk.qcow2" "$out"
