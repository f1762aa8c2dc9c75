#!/usr/bin/env bash
# guest-kernel.sh - extract Debian's generic amd64 kernel (vmlinuz + modules)
# into a versioned cache dir without installing it on the host, and print
# that dir. Shared by the hyper engine's initramfs build and the unikernel
# engine's `linux`-type test image.
#
#   guest-kernel.sh            print the kernel dir, extracting it if needed
#   HCR_ASSET_DIR=/path ...    cache root (default /var/lib/hcr/assets)
#
# Layout: $HCR_ASSET_DIR/kernel/<package-version>/{vmlinuz,lib/modules/<kver>/,kver}
set -euo pipefail

ASSETS=${HCR_ASSET_DIR:-/var/lib/hcr/assets}
log() { echo "guest-kernel: $*" >&2; }

# linux-image-amd64 is a metapackage; its dependency names the real image package.
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [[ -z $pkg ]]; then
	log "apt knows no linux-image-amd64; running apt-get update"
	apt-get update -qq
	pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[[ -n $pkg ]] || { log "ERROR: cannot resolve linux-image-amd64"; exit 1; }
version=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
dest=$ASSETS/kernel/$pkg-$version

if [[ -f $dest/vmlinuz && -f $dest/kver ]]; then
	echo "$dest"
	exit 0
fi

log "extracting $pkg $version into $dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
(cd "$work" && apt-get download -qq "$pkg" >&2 2>/dev/null || (cd "$work" && apt-get download "$pkg" >&2))
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/root"
kver=$(basename "$(ls -d "$work"/root/lib/modules/*/ | head -n1)")
mkdir -p "$dest.tmp/lib/modules"
cp "$work/root/boot/vmlinuz-$kver" "$dest.tmp/vmlinuz"
cp -a "$work/root/lib/modules/$kver" "$dest.tmp/lib/modules/"
echo "$kver" >"$dest.tmp/kver"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
log "kernel $kver ready"
echo "$dest"
