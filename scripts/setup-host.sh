#!/bin/bash
# Prepare a Debian 12 host for blockplane: bookworm-backports, QEMU, libvirt and the
# packages the test guest is built from. Idempotent; needs root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host: must run as root (apt-get)" >&2
    exit 1
fi

backports_list=/etc/apt/sources.list.d/blockplane-backports.sources
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # Reuse the host's own mirror and key: take URIs and Signed-By from the stanza that
    # carries the plain "bookworm" suite, so no host name is ever written by us.
    main_sources=/etc/apt/sources.list.d/debian.sources
    stanza=$(awk -v RS= '/\nSuites:[^\n]*[ ]bookworm([ ]|\n|$)/{print; exit}' "$main_sources")
    uris=$(printf '%s\n' "$stanza" | grep '^URIs:' || true)
    signed_by=$(printf '%s\n' "$stanza" | grep '^Signed-By:' || true)
    if [ -z "$uris" ]; then
        echo "setup-host: no bookworm stanza found in $main_sources" >&2
        exit 1
    fi
    {
        echo "Types: deb"
        echo "$uris"
        echo "Suites: bookworm-backports"
        echo "Components: main"
        [ -n "$signed_by" ] && echo "$signed_by"
    } > "$backports_list"
    echo "setup-host: enabled bookworm-backports in $backports_list"
fi

# qemu-block-extra holds QEMU's rbd driver; it must come from backports like QEMU itself.
backports_packages=(qemu-system-x86 qemu-utils qemu-guest-agent qemu-block-extra libvirt-daemon-system libvirt-clients
    libvirt-dev)
# Ceph (bookworm's Pacific, none in backports) for rbd pools and the one-node test cluster;
# openssl for the lab's CA; libxml2-utils (xmllint) for virt-xml-validate (libvirt-clients),
# which the tests run on every domain XML they leave behind.
plain_packages=(pkg-config gcc make python3-venv python3-dev busybox-static fio cpio kmod util-linux tmux file
    openssl ceph-mon ceph-osd ceph-common libxml2-utils)

missing=()
for package in "${backports_packages[@]}" "${plain_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
qemu_version=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
case "$qemu_version" in
    *bpo12*) ;;
    *) missing+=(qemu-system-x86) ;;
esac
# A block module built for another QEMU is not loaded: its version must be QEMU's own.
block_extra_version=$(dpkg-query -W -f='${Version}' qemu-block-extra 2>/dev/null || true)
if [ "$block_extra_version" != "$qemu_version" ]; then
    missing+=(qemu-block-extra)
fi

if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends -t bookworm-backports \
        "${backports_packages[@]}" "${plain_packages[@]}"
fi
echo "setup-host: host packages ready ($(dpkg-query -W -f='qemu ${Version}' qemu-system-x86), $(dpkg-query -W -f='libvirt ${Version}' libvirt-daemon), $(dpkg-query -W -f='ceph ${Version}' ceph-mon))"
