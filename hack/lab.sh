#!/usr/bin/env bash
# The kernel lab: runs a command as root inside a QEMU guest booted from Debian's own stock
# kernel, in software emulation (TCG), with this machine's root shared read-only into the guest
# (9p, under a tmpfs overlay: nothing the guest writes reaches the host), so binaries built here
# run there unchanged, in the same working directory.
#
#   hack/lab.sh setup            fetch and build what the lab needs (idempotent; also done by run)
#   hack/lab.sh run CMD [ARG..]  run CMD in the guest; streams its output, exits with its status
#
# Everything comes from Debian packages: the kernel (linux-image-6.1.0-NN-amd64, extracted with
# apt-get download + dpkg -x, never installed into /boot), busybox-static for the initramfs,
# qemu-system-x86, and netdevsim, which Debian's kernel does not build (# CONFIG_NETDEVSIM is
# not set): it is built out of tree from linux-source-6.1 of the same Debian upload, with that
# kernel's headers. The guest loads bonding, 8021q and netdevsim from the kernel's modules.
#
# Environment: PLEXUS_LAB_DIR (cache, default /var/cache/plexus-lab), PLEXUS_LAB_TIMEOUT
# (seconds, default 600), PLEXUS_LAB_MEM (MiB, default 2048). PLEXUS_* and RUST_* variables are
# passed into the guest.
set -euo pipefail

LAB=${PLEXUS_LAB_DIR:-/var/cache/plexus-lab}
TIMEOUT=${PLEXUS_LAB_TIMEOUT:-600}
MEM=${PLEXUS_LAB_MEM:-2048}

say() { echo "lab: $*" >&2; }
die() { echo "lab: $*" >&2; exit 2; }

# The kernel ABI of the newest linux-image-amd64, and its Debian version: the image, the
# headers and the source must all be this one upload.
kernel_abi() { apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\(.*\)-amd64/\1/p' | head -1; }

setup() {
    mkdir -p "$LAB"
    # Ready, and made by this version of the scripts (the initramfs holds lab-init).
    local stamp
    stamp=$(cat "$0" "$(dirname "$0")/lab-init" | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$LAB/ready" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    command -v apt-get >/dev/null || die "apt-get is missing: the lab needs Debian's packages"
    # Current lists: a kernel upload the lists still name may be gone from the mirror.
    apt-get update -qq >"$LAB/update.log" 2>&1 || { cat "$LAB/update.log" >&2; die "apt-get update failed"; }
    local abi version
    abi=$(kernel_abi)
    [ -n "$abi" ] || die "no linux-image-amd64 in the package lists (apt-get update?)"
    version=$(apt-cache show "linux-image-$abi-amd64" | sed -n 's/^Version: //p' | head -1)
    say "kernel linux-image-$abi-amd64 $version"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        qemu-system-x86 kmod cpio "linux-headers-$abi-amd64=$version" >"$LAB/apt.log" 2>&1 \
        || { cat "$LAB/apt.log" >&2; die "installing qemu-system-x86 and the kernel headers failed"; }
    local work="$LAB/work"
    rm -rf "$work" && mkdir -p "$work"
    (cd "$work" && apt-get download -q "linux-image-$abi-amd64=$version" busybox-static \
        "linux-source-6.1=$version" >"$LAB/download.log" 2>&1) \
        || { cat "$LAB/download.log" >&2; die "downloading the kernel, busybox or the kernel source failed"; }
    local root="$LAB/kernel"
    rm -rf "$root" && mkdir -p "$root"
    dpkg -x "$work"/linux-image-*.deb "$root"
    dpkg -x "$work"/busybox-static_*.deb "$work/busybox"
    dpkg -x "$work"/linux-source-6.1_*.deb "$work/source"
    local release
    release=$(ls "$root/lib/modules")
    # netdevsim, out of tree, from the same upload's source, against its headers.
    tar -xJf "$work/source/usr/src/linux-source-6.1.tar.xz" -C "$work" \
        linux-source-6.1/drivers/net/netdevsim linux-source-6.1/scripts/extract-vmlinux
    make -s -C "/usr/src/linux-headers-$release" M="$work/linux-source-6.1/drivers/net/netdevsim" \
        CONFIG_NETDEVSIM=m modules >"$LAB/netdevsim.log" 2>&1 \
        || { cat "$LAB/netdevsim.log" >&2; die "building netdevsim failed"; }
    mkdir -p "$root/lib/modules/$release/extra"
    cp "$work/linux-source-6.1/drivers/net/netdevsim/netdevsim.ko" "$root/lib/modules/$release/extra/"
    depmod -b "$root" "$release"
    # The uncompressed kernel: QEMU boots its PVH entry directly, much faster under TCG than
    # decompressing the bzImage in emulation.
    sh "$work/linux-source-6.1/scripts/extract-vmlinux" "$root/boot/vmlinuz-$release" >"$LAB/vmlinux"
    # The initramfs: busybox, the modules to reach the shared root, and init.
    local initrd="$work/initrd"
    mkdir -p "$initrd/bin" "$initrd/modules" "$initrd/proc" "$initrd/sys" "$initrd/dev" "$initrd/mnt"
    cp "$work/busybox/bin/busybox" "$initrd/bin/busybox"
    for module in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci \
        netfs fscache 9pnet 9pnet_virtio 9p overlay; do
        cp "$(find "$root/lib/modules/$release" -name "$module.ko" | head -1)" "$initrd/modules/"
    done
    cp "$(dirname "$0")/lab-init" "$initrd/init"
    chmod 755 "$initrd/init"
    (cd "$initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$LAB/initrd.gz"
    echo "$release" >"$LAB/release"
    rm -rf "$work"
    echo "$stamp" >"$LAB/ready"
    say "ready: $(cat "$LAB/release")"
}

run() {
    [ $# -gt 0 ] || die "usage: hack/lab.sh run CMD [ARG...]"
    setup
    local release
    release=$(cat "$LAB/release")
    # Globals: the EXIT trap runs after this function has returned.
    job=$(mktemp -d /tmp/plexus-lab.XXXXXX)
    : >"$job/console"
    # The command, its directory and its environment, for the guest's init (a 9p share).
    {
        printf 'cd %q\n' "$PWD"
        env | grep -E '^(PLEXUS|RUST|CARGO)_[A-Za-z0-9_]*=' | while IFS='=' read -r name value; do
            printf 'export %s=%q\n' "$name" "$value"
        done
        printf '%q ' "$@"
        echo
    } >"$job/command"
    qemu_pid=""
    cleanup() {
        if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
            kill -KILL "$qemu_pid" 2>/dev/null || true
        fi
        rm -rf "$job"
    }
    trap cleanup EXIT INT TERM
    # Software emulation always: these machines' /dev/kvm is a paravirtual kind that cannot
    # run a stock guest, and the lab must behave the same everywhere it runs.
    local accel="tcg,thread=multi"
    qemu-system-x86_64 -accel "$accel" -cpu max -smp 2 -m "$MEM" -nodefaults -no-reboot \
        -display none -serial stdio \
        -kernel "$LAB/vmlinux" -initrd "$LAB/initrd.gz" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1 plexus.release=$release" \
        -fsdev local,id=root,path=/,security_model=none,readonly=on,multidevs=remap \
        -device virtio-9p-pci,fsdev=root,mount_tag=hostroot \
        -fsdev local,id=modules,path="$LAB/kernel/lib/modules",security_model=none,readonly=on \
        -device virtio-9p-pci,fsdev=modules,mount_tag=modules \
        -fsdev local,id=job,path="$job",security_model=none \
        -device virtio-9p-pci,fsdev=job,mount_tag=job \
        </dev/null >"$job/console" 2>&1 &
    qemu_pid=$!
    # Streams the guest's output; the exit marker ends it.
    local status=""
    local deadline=$((SECONDS + TIMEOUT))
    local shown=0
    while :; do
        if [ -f "$job/status" ]; then
            status=$(cat "$job/status")
        fi
        local lines
        lines=$(wc -l <"$job/console")
        if [ "$lines" -gt "$shown" ]; then
            sed -n "$((shown + 1)),${lines}p" "$job/console" | tr -d '\r'
            shown=$lines
        fi
        if ! kill -0 "$qemu_pid" 2>/dev/null; then
            break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "timed out after ${TIMEOUT}s: killing the guest"
            status=124
            break
        fi
        sleep 0.2
    done
    wait "$qemu_pid" 2>/dev/null || true
    sed -n "$((shown + 1)),\$p" "$job/console" | tr -d '\r'
    if [ -f "$job/status" ] && [ "$status" != 124 ]; then
        status=$(cat "$job/status")
    fi
    [ -n "$status" ] || { say "the guest ended without the command's status"; status=2; }
    exit "$status"
}

case "${1:-}" in
setup) setup ;;
run) shift; run "$@" ;;
*) die "usage: hack/lab.sh setup | run CMD [ARG...]" ;;
esac
