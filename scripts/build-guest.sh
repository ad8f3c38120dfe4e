#!/bin/bash
# Build the blockplane Linux test guest: a Debian cloud kernel plus a busybox initramfs that
# carries fio and qemu-guest-agent. Boots under TCG in a few seconds and answers the guest
# agent on the virtio-serial port org.qemu.guest_agent.0.
#
# Usage: scripts/build-guest.sh OUTDIR
#
# Writes OUTDIR/vmlinuz, OUTDIR/initramfs.img and OUTDIR/manifest.json. Idempotent: when the
# manifest's input hash matches the current inputs, it prints "guest image up to date" and exits.
# Needs: apt-get/apt-cache with current package lists, dpkg-deb, busybox-static, fio,
# qemu-guest-agent, cpio, kmod (depmod, modinfo), gzip. Root is needed for /dev/console in the
# image (mknod); the kernel is only downloaded and unpacked, never installed on the host.
set -euo pipefail
umask 022
export LC_ALL=C

readonly METAPACKAGE=linux-image-cloud-amd64
readonly CMDLINE="console=ttyS0 quiet panic=-1"
readonly AGENT_CHANNEL=org.qemu.guest_agent.0
# Drivers the guest needs; their module dependencies are added automatically.
readonly WANTED_MODULES=(virtio_pci virtio_blk virtio_scsi sd_mod virtio_console)
# Host binaries copied in with their shared libraries.
readonly HOST_BINARIES=(/usr/bin/fio /usr/sbin/qemu-ga)
readonly HOST_PACKAGES=(busybox-static fio qemu-guest-agent)

die() {
    echo "build-guest: $*" >&2
    exit 1
}
log() {
    echo "build-guest: $*" >&2
}

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo_root=$(dirname "$(dirname "$script_path")")
init_src="$repo_root/guest/init"
[ -f "$init_src" ] || die "missing $init_src"

for tool in apt-cache apt-get dpkg-deb dpkg-query cpio depmod modinfo gzip ldd sha256sum flock; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done
busybox_bin=/usr/bin/busybox
[ -x "$busybox_bin" ] || busybox_bin=/bin/busybox
[ -x "$busybox_bin" ] || die "busybox-static is not installed"
for binary in "${HOST_BINARIES[@]}"; do
    [ -x "$binary" ] || die "missing $binary (install fio and qemu-guest-agent)"
done

# --- Resolve the kernel package: the ABI package the metapackage depends on. -------------
# One apt-cache call (each one rebuilds apt's cache, ~1 s here): the metapackage's Depends
# pins the ABI package to an exact version, e.g.
#   Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
depends=$(apt-cache show --no-all-versions "$METAPACKAGE" 2>/dev/null |
    sed -n 's/^Depends: *//p' | head -n1)
[ -n "$depends" ] || die "cannot resolve $METAPACKAGE (run apt-get update?)"
kernel_package=$(printf '%s\n' "$depends" | tr ',' '\n' |
    sed -n 's/^ *\(linux-image-[^ ]*-cloud-amd64\)\( .*\)\{0,1\}$/\1/p' | head -n1)
kernel_package_version=$(printf '%s\n' "$depends" | tr ',' '\n' |
    sed -n 's/^ *linux-image-[^ ]*-cloud-amd64 *(= *\([^ )]*\)).*$/\1/p' | head -n1)
[ -n "$kernel_package" ] || die "no cloud kernel in $METAPACKAGE's Depends: $depends"
[ -n "$kernel_package_version" ] || die "$METAPACKAGE does not pin $kernel_package's version"
kernel_version=${kernel_package#linux-image-}
[[ "$kernel_version" =~ ^[0-9A-Za-z.+~-]+$ ]] || die "unexpected kernel version '$kernel_version'"
[[ "$kernel_package_version" =~ ^[0-9A-Za-z.:+~-]+$ ]] ||
    die "unexpected package version '$kernel_package_version'"

host_versions=""
for package in "${HOST_PACKAGES[@]}"; do
    version=$(dpkg-query -W -f='${Version}' "$package" 2>/dev/null) || die "$package is not installed"
    host_versions+="$package=$version;"
done

input_hash=$(
    {
        sha256sum <"$script_path"
        sha256sum <"$init_src"
        printf '%s=%s\n' "$kernel_package" "$kernel_package_version"
        printf '%s\n' "$host_versions"
    } | sha256sum | cut -d' ' -f1
)

outdir=$1
mkdir -p "$outdir"
outdir=$(readlink -f "$outdir")

manifest_hash() {
    # Print the input hash recorded in OUTDIR's manifest, or nothing.
    [ -f "$outdir/manifest.json" ] || return 0
    sed -n 's/.*"input_hash": *"\([0-9a-f]*\)".*/\1/p' "$outdir/manifest.json" | head -n1
}
up_to_date() {
    [ "$(manifest_hash)" = "$input_hash" ] && [ -s "$outdir/vmlinuz" ] && [ -s "$outdir/initramfs.img" ]
}

if up_to_date; then
    echo "guest image up to date"
    exit 0
fi

# Serialise concurrent builders of the same OUTDIR; re-check once we hold the lock.
exec 9>"$outdir/.build.lock"
flock 9
if up_to_date; then
    echo "guest image up to date"
    exit 0
fi

started=$(date +%s)
# Work dirs left by a killed builder (we hold the lock, so none is in use).
find "$outdir" -mindepth 1 -maxdepth 1 -type d -name '.build.??????' -exec rm -rf {} +
# Build next to OUTDIR so the final renames stay on one file system.
work=$(mktemp -d "$outdir/.build.XXXXXX")
cleanup() {
    rm -rf "$work"
}
trap cleanup EXIT

# --- Kernel -----------------------------------------------------------------------------
log "downloading $kernel_package $kernel_package_version"
mkdir -p "$work/dl"
chmod 755 "$work" "$work/dl"
# Let apt's unprivileged _apt user write here, so apt does not warn about an unsandboxed fetch.
if id _apt >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    chown _apt "$work/dl"
fi
(cd "$work/dl" && apt-get download -q "$kernel_package=$kernel_package_version" >/dev/null)
deb=$(find "$work/dl" -maxdepth 1 -name "${kernel_package}_*.deb" -print -quit)
[ -n "$deb" ] || die "apt-get download produced no .deb"
dpkg-deb -x "$deb" "$work/kernel"
rm -f "$deb"
kernel_root="$work/kernel"
vmlinuz_src="$kernel_root/boot/vmlinuz-$kernel_version"
moddir_src="$kernel_root/lib/modules/$kernel_version"
[ -f "$vmlinuz_src" ] || die "no vmlinuz in $kernel_package"
[ -d "$moddir_src" ] || die "no module tree in $kernel_package"

# --- Initramfs staging tree (merged /usr, like the host) --------------------------------
root="$work/root"
mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/{dev,proc,sys,tmp,run,etc,root,mnt,var}
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
ln -s ../run "$root/var/run"
mkdir -p "$root/var/lib" "$root/var/log"
chmod 1777 "$root/tmp"

# busybox and its applets
cp "$busybox_bin" "$root/usr/bin/busybox"
while IFS= read -r applet; do
    [ -n "$applet" ] || continue
    name=${applet##*/}
    case "$applet" in
        sbin/* | usr/sbin/*) dest="$root/usr/sbin/$name" ;;
        *) dest="$root/usr/bin/$name" ;;
    esac
    [ -e "$dest" ] || [ -L "$dest" ] || ln -s /usr/bin/busybox "$dest"
done < <("$busybox_bin" --list-full)

# Copy a file from the host to the same path in the image, resolving the host's merged-/usr
# directory symlinks (so /lib/x/libc.so.6 lands in usr/lib/x/libc.so.6) but keeping the
# file's own name (a soname symlink becomes a regular file with the soname).
copy_host_file() {
    local src=$1 dir dest
    dir=$(readlink -f "$(dirname "$src")")
    dest="$root$dir/$(basename "$src")"
    [ -e "$dest" ] && return 0
    mkdir -p "$root$dir"
    cp -L "$src" "$dest"
}

for binary in "${HOST_BINARIES[@]}"; do
    copy_host_file "$binary"
    # ldd lines: "libx.so.1 => /path/libx.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    while read -r first arrow path _; do
        if [ "$arrow" = "=>" ]; then
            [ "${path#/}" != "$path" ] || die "$binary: unresolved library $first"
            copy_host_file "$path"
        elif [ "${first#/}" != "$first" ]; then
            copy_host_file "$first"
        fi
    done < <(ldd "$binary")
done

# ICU's data library (about 30 MB, a third of the image, and its unpacking dominates boot time
# under TCG) comes in only through fio's ceph/gluster engines -> libxml2 -> libicuuc. Nothing
# the guest runs calls ICU, but fio is linked BIND_NOW, so the library must exist and define
# its one data symbol. Replace it with a stub defining that symbol; should ICU ever be used,
# its data header check fails cleanly (U_INVALID_FORMAT_ERROR). Keeps the real library when
# no C compiler is available or the library is not the expected shape.
stub_icu_data() {
    local lib=$1 soname symbols
    soname=$(readelf -d "$lib" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
    symbols=$(nm -D --defined-only "$lib" 2>/dev/null | awk '{print $3}')
    if ! command -v gcc >/dev/null 2>&1 || ! command -v nm >/dev/null 2>&1 ||
        [ -z "$soname" ] ||
        ! [[ "$symbols" =~ ^icudt[0-9]+[lb]?_dat$ ]]; then
        log "keeping the real $(basename "$lib")"
        return 0
    fi
    printf 'const unsigned char %s[16] = {0};\n' "$symbols" >"$work/icudata-stub.c"
    gcc -shared -fPIC -O2 -nostdlib -Wl,-soname,"$soname" -o "$work/icudata-stub.so" \
        "$work/icudata-stub.c"
    mv -f "$work/icudata-stub.so" "$lib"
    chmod 644 "$lib"
}
while IFS= read -r -d '' lib; do
    stub_icu_data "$lib"
done < <(find "$root/usr/lib" -name 'libicudata.so.*' -type f -print0)

if command -v ldconfig >/dev/null 2>&1; then
    printf '/usr/lib/x86_64-linux-gnu\n/usr/lib\n' >"$root/etc/ld.so.conf"
    ldconfig -r "$root" 2>/dev/null || log "ldconfig -r failed; relying on default library paths"
fi

# --- Kernel modules: the wanted drivers and their dependencies, in load order ------------
declare -A module_path=()
while IFS= read -r -d '' file; do
    base=${file##*/}
    base=${base%%.ko*}
    module_path[${base//-/_}]=${file#"$moddir_src"/}
done < <(find "$moddir_src/kernel" -name '*.ko*' -print0)

declare -A module_seen=()
module_order=()
add_module() {
    local name=${1//-/_} dep deps
    [ -n "${module_seen[$name]:-}" ] && return 0
    module_seen[$name]=1
    if [ -z "${module_path[$name]:-}" ]; then
        # Built into the kernel (or absent): nothing to load.
        grep -q "/$name.ko" "$moddir_src/modules.builtin" 2>/dev/null ||
            die "module $name is neither a module nor built in"
        return 0
    fi
    deps=$(modinfo -F depends "$moddir_src/${module_path[$name]}")
    for dep in ${deps//,/ }; do
        add_module "$dep"
    done
    module_order+=("$name")
}
for module in "${WANTED_MODULES[@]}"; do
    add_module "$module"
done

moddir_dst="$root/usr/lib/modules/$kernel_version"
mkdir -p "$moddir_dst" "$root/etc/blockplane"
: >"$root/etc/blockplane/modules.order"
for name in "${module_order[@]}"; do
    rel=${module_path[$name]}
    src="$moddir_src/$rel"
    dst_rel=${rel%%.ko*}.ko
    mkdir -p "$(dirname "$moddir_dst/$dst_rel")"
    case "$rel" in
        *.ko) cp "$src" "$moddir_dst/$dst_rel" ;;
        *.ko.xz) xz -dc "$src" >"$moddir_dst/$dst_rel" ;;
        *.ko.zst) zstd -qdc "$src" >"$moddir_dst/$dst_rel" ;;
        *.ko.gz) gzip -dc "$src" >"$moddir_dst/$dst_rel" ;;
        *) die "unknown module format: $rel" ;;
    esac
    echo "/lib/modules/$kernel_version/$dst_rel" >>"$root/etc/blockplane/modules.order"
done
cp "$moddir_src/modules.builtin" "$moddir_src/modules.builtin.modinfo" "$moddir_dst/"
[ -f "$moddir_src/modules.order" ] && cp "$moddir_src/modules.order" "$moddir_dst/"
depmod -b "$root" "$kernel_version"

# --- Config files and /init ------------------------------------------------------------------
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf 'blockplane-guest\n' >"$root/etc/hostname"
printf '%s\n' "$CMDLINE" >"$root/etc/blockplane/cmdline"
printf '%s\n' "$AGENT_CHANNEL" >"$root/etc/blockplane/agent-channel"
# qemu-ga's guest-shutdown runs /sbin/shutdown; busybox poweroff/reboot without -f only
# signal PID 1, which our shell init ignores, so map shutdown onto the forced variants.
cat >"$root/usr/sbin/shutdown" <<'EOF'
#!/bin/sh
# Minimal shutdown for the blockplane test guest (called by qemu-ga's guest-shutdown).
action=poweroff
for arg in "$@"; do
    case "$arg" in
        -r) action=reboot ;;
        -H) action=halt ;;
        -h|-P) action=poweroff ;;
    esac
done
sync
exec "$action" -f
EOF
chmod 755 "$root/usr/sbin/shutdown"
install -m 755 "$init_src" "$root/init"
if [ "$(id -u)" -eq 0 ]; then
    mknod -m 600 "$root/dev/console" c 5 1
    mknod -m 666 "$root/dev/null" c 1 3
else
    log "not root: no /dev/console node in the image (init redirects once devtmpfs is up)"
fi

# --- Pack -------------------------------------------------------------------------------
log "packing initramfs"
# Fixed timestamps: identical inputs give a byte-identical initramfs.
find "$root" -exec touch -h -d @0 {} +
(
    cd "$root"
    find . -mindepth 1 -print0 | sort -z |
        cpio --null -o -H newc -R 0:0 --quiet --reproducible
) | gzip -6 -n >"$work/initramfs.img"
cp "$vmlinuz_src" "$work/vmlinuz"

built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
modules_json=$(printf '"%s",' "${module_order[@]}")
modules_json="[${modules_json%,}]"
cat >"$work/manifest.json" <<EOF
{
  "kernel_version": "$kernel_version",
  "kernel_package": "$kernel_package",
  "kernel_package_version": "$kernel_package_version",
  "input_hash": "$input_hash",
  "built_at": "$built_at",
  "cmdline": "$CMDLINE",
  "agent_channel": "$AGENT_CHANNEL",
  "ready_marker": "BLOCKPLANE-GUEST-READY",
  "modules": $modules_json,
  "vmlinuz_sha256": "$(sha256sum "$work/vmlinuz" | cut -d' ' -f1)",
  "initramfs_sha256": "$(sha256sum "$work/initramfs.img" | cut -d' ' -f1)",
  "initramfs_bytes": $(stat -c %s "$work/initramfs.img")
}
EOF

# --- Install: drop the old manifest first, rename the images in, manifest last ------------
# A reader that sees manifest.json therefore always sees the matching images.
rm -f "$outdir/manifest.json"
mv -f "$work/vmlinuz" "$outdir/vmlinuz"
mv -f "$work/initramfs.img" "$outdir/initramfs.img"
mv -f "$work/manifest.json" "$outdir/manifest.json"

size=$(stat -c %s "$outdir/initramfs.img")
log "built $kernel_package ($kernel_package_version), initramfs $((size / 1024 / 1024)) MiB," \
    "in $(($(date +%s) - started)) s"
echo "guest image built in $outdir"
