# Shared helpers for nuage's scripts. Source it from bash.
# Downloads land in $NUAGE_CACHE (default ~/.cache/nuage) and are reused by later runs.

NUAGE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NUAGE_CACHE=${NUAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nuage}
NUAGE_TARGET=x86_64-unknown-linux-gnu
mkdir -p "$NUAGE_CACHE"

log() { echo "[nuage] $*" >&2; }
die() { echo "[nuage] error: $*" >&2; exit 1; }

# Runs the package step (scripts/deps.sh) once per run of the scripts: every command the
# tests and the main job use is on PATH afterwards, or the script stops naming what is not.
need_deps() {
    [ -n "${NUAGE_DEPS_CHECKED:-}" ] && return 0
    "$NUAGE_ROOT/scripts/deps.sh" || exit 1
    export NUAGE_DEPS_CHECKED=1
}

# True when /dev/kvm is backed by hardware virtualization (VT-x or AMD-V).
hardware_kvm() {
    [ -c /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo
}

# debian_kernel [METAPACKAGE]: prints the directory holding a Debian stock kernel, unpacked
# (boot/ and lib/modules/); linux-image-cloud-amd64 by default, linux-image-amd64 for the
# generic flavour. The versioned package is resolved from the metapackage, so security
# updates are followed.
debian_kernel() {
    local meta=${1:-linux-image-cloud-amd64} pkg
    pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
    if [ -z "$pkg" ]; then
        apt-get update -q >/dev/null
        pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-/{print $2; exit}')
    fi
    [ -n "$pkg" ] || die "cannot resolve $meta"
    local dir="$NUAGE_CACHE/kernel/$pkg"
    if [ ! -f "$dir/.unpacked" ]; then
        log "downloading $pkg"
        rm -rf "$dir" && mkdir -p "$dir"
        (cd "$dir" && apt-get download -q "$pkg" >&2 2>/dev/null) || die "apt-get download $pkg failed"
        dpkg-deb -x "$dir"/*.deb "$dir/root"
        rm -f "$dir"/*.deb
        touch "$dir/.unpacked"
    fi
    echo "$dir/root"
}

# Extracts the uncompressed ELF vmlinux from a bzImage into $2, for VMMs and tests that
# boot an ELF kernel. Debian's cloud flavour compresses it with LZ4, the generic one with XZ.
extract_vmlinux() {
    local bzimage=$1 out=$2 magic tool offset
    [ -s "$out" ] && return 0
    # LZ4 legacy frame magic 0x184C2102 (little endian); the XZ stream header.
    for magic in '\x02\x21\x4c\x18 lz4' '\xfd\x37\x7a\x58\x5a\x00 xz'; do
        tool=${magic##* }
        offset=$(LC_ALL=C grep -obUaP "${magic% *}" "$bzimage" | head -1 | cut -d: -f1 || true)
        [ -n "$offset" ] || continue
        tail -c +"$((offset + 1))" "$bzimage" | "$tool" -dc 2>/dev/null > "$out.tmp" || true
        [ "$(head -c 4 "$out.tmp" | od -An -c | tr -d ' ')" = "177ELF" ] && { mv "$out.tmp" "$out"; return 0; }
    done
    rm -f "$out.tmp"
    die "extracting vmlinux from $bzimage failed (no LZ4 or XZ payload holding an ELF)"
}

# The test guest's own tools (images/test-guest/NAME.rs), in its initramfs and, for their
# host sides, in the nested harness's payload.
TEST_GUEST_TOOLS="nuage-bench nuage-vsock"

# Builds one of the test guest's static tools (images/test-guest/NAME.rs, std only) when its
# source changed, and prints its path.
test_guest_tool() {
    local src="$NUAGE_ROOT/images/test-guest/$1.rs" out="$NUAGE_ROOT/target/$1"
    mkdir -p "$NUAGE_ROOT/target"
    if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
        rustc -O --edition 2021 -C strip=symbols -C target-feature=+crt-static --target "$NUAGE_TARGET" \
            "$src" -o "$out" >&2 || die "building $1 failed"
    fi
    echo "$out"
}

# Builds statically linked nuage-vmm, nuaged, nuage, nuage-lb and the store and net tools
# (examples/), which run inside a bare initramfs, and prints the directory holding them.
build_static_binaries() {
    (cd "$NUAGE_ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked --quiet --target "$NUAGE_TARGET" \
            --bin nuage-vmm --bin nuaged --bin nuage --bin nuage-lb --example store --example net) >&2 \
        || die "building static binaries failed"
    local out="$NUAGE_ROOT/target/$NUAGE_TARGET/release"
    ln -f "$out/examples/store" "$out/store"
    ln -f "$out/examples/net" "$out/net"
    echo "$out"
}

# stage_kernel_modules MODULES_DIR DEST NAME...: copies the kernel modules NAME... and
# every module they depend on (read from each module's own `depends=` entry, so no depmod
# is needed) from MODULES_DIR into DEST, and lists them in DEST/order, each after what it
# needs: an init loads them with insmod in that order.
stage_kernel_modules() {
    local dir=$1 dest=$2
    shift 2
    mkdir -p "$dest"
    local index
    index=$(cd "$dir" && find kernel -name '*.ko')
    _stage_module() {
        local name=${1//-/_} file deps
        grep -qx "$name" "$dest/.seen" 2>/dev/null && return 0
        echo "$name" >> "$dest/.seen"
        file=$(awk -v n="$name" '{b=$0; sub(/.*\//, "", b); sub(/\.ko$/, "", b); gsub(/-/, "_", b); if (b == n) {print; exit}}' <<< "$index")
        if [ -z "$file" ]; then
            # Built into this flavour's kernel: nothing to load.
            tr - _ < "$dir/modules.builtin" 2>/dev/null | grep -q "/$name.ko$" && return 0
            die "kernel module $name is not in $dir"
        fi
        deps=$(grep -ao 'depends=[a-z0-9_,-]*' "$dir/$file" | head -1 | cut -d= -f2 | tr , ' ')
        for dep in $deps; do _stage_module "$dep"; done
        cp "$dir/$file" "$dest/"
        basename "$file" .ko >> "$dest/order"
    }
    rm -f "$dest/.seen" "$dest/order"
    for name in "$@"; do _stage_module "$name"; done
    rm -f "$dest/.seen"
}

# stage_programs ROOT PROGRAM...: copies host programs into ROOT/usr/local/sbin with the
# shared libraries they load, at the same paths under ROOT, for an initramfs to run them.
stage_programs() {
    local root=$1 program path lib
    shift
    mkdir -p "$root/usr/local/sbin"
    for program in "$@"; do
        path=$(command -v "$program") || die "$program is not installed"
        cp "$path" "$root/usr/local/sbin/"
        for lib in $(ldd "$path" | grep -o '/[^ ]*'); do
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
    done
}
