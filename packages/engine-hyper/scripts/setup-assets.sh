#!/usr/bin/env bash
# setup-assets.sh - build the hyper engine's guest assets: the guest kernel
# (Debian's generic kernel, via guest-kernel.sh) and an initramfs holding the
# guest agent as /init, busybox-static (for modprobe) and the virtio, 9p and
# network modules the guest needs, with a modules.dep made by `depmod -b`.
#
#   setup-assets.sh            build if the inputs changed, print the asset dir
#   HCR_ASSET_DIR=/path ...    cache root (default /var/lib/hcr/assets)
#   HCR_SETUP_QUIET=1 ...      only warnings and the result
#
# Layout: $HCR_ASSET_DIR/hyper/<hash of inputs>/{vmlinux,vmlinuz,initrd.img,manifest.json}
# and $HCR_ASSET_DIR/hyper/current -> <hash>. The hash covers the agent's
# sources, the kernel package, the module list, busybox and this script, so
# any change to them rebuilds and an unchanged tree costs a few seconds.
# Called by scripts/setup.sh; idempotent; safe while VMs run (QEMU reads the
# kernel and initramfs only when it starts).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PKG=$(dirname "$HERE")
AGENT_SRC=$PKG/guest/agent
ASSETS=${HCR_ASSET_DIR:-/var/lib/hcr/assets}
OUT_ROOT=$ASSETS/hyper
BUSYBOX=${HCR_BUSYBOX:-/bin/busybox}
# In the initramfs with their dependencies: the agent loads all but bridge at boot
# (guest/agent/main.c); the kernel loads bridge on first use.
MODULES=(virtio_mmio virtio_console virtio_net 9pnet_virtio 9p bridge)

say() { [[ ${HCR_SETUP_QUIET:-0} == 1 ]] || echo "hyper-assets: $*" >&2; }
die() {
	echo "hyper-assets: ERROR: $*" >&2
	exit 1
}

for tool in gcc make cpio depmod modprobe gzip xz readelf sha256sum; do
	command -v "$tool" >/dev/null || die "$tool not found (setup.sh installs gcc, make, cpio, kmod)"
done
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found (Debian package busybox-static)"
[[ $(gcc -print-file-name=libseccomp.a) == /* ]] ||
	die "libseccomp.a not found: the guest agent links it statically (Debian package libseccomp-dev)"

say "guest kernel (guest-kernel.sh)"
KDIR=$(HCR_ASSET_DIR=$ASSETS "$HERE/guest-kernel.sh")
KVER=$(cat "$KDIR/kver")
[[ -f $KDIR/vmlinuz && -d $KDIR/lib/modules/$KVER ]] || die "guest-kernel.sh gave an incomplete kernel dir $KDIR"

# The build id: every input that changes the output.
hash=$(
	{
		echo "kernel $(basename "$KDIR") $KVER"
		echo "modules ${MODULES[*]}"
		sha256sum "$BUSYBOX" | cut -d' ' -f1
		sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
		(cd "$AGENT_SRC" && find . -type f \( -name '*.c' -o -name '*.h' -o -name Makefile \) -print0 |
			LC_ALL=C sort -z | xargs -0 sha256sum)
	} | sha256sum | cut -c1-16
)
DEST=$OUT_ROOT/$hash

if [[ -f $DEST/vmlinuz && -f $DEST/initrd.img && -f $DEST/manifest.json ]]; then
	say "assets $hash are up to date"
else
	say "building assets $hash (kernel $KVER)"
	mkdir -p "$OUT_ROOT"
	# Leftovers of an interrupted build.
	find "$OUT_ROOT" -mindepth 1 -maxdepth 1 -type d \( -name '.build.*' -o -name '.*.tmp' \) -exec rm -rf {} +
	WORK=$(mktemp -d "$OUT_ROOT/.build.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT
	ROOT=$WORK/root

	say "compiling the guest agent"
	mkdir -p "$WORK/agent"
	make -s -C "$AGENT_SRC" OUT="$WORK/agent/" HCR_AGENT_BUILD="$hash" >&2 ||
		die "the guest agent does not build"

	say "staging the initramfs"
	mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,run,tmp,etc} "$ROOT/lib/modules/$KVER"
	install -m 0755 "$WORK/agent/hcr-agent" "$ROOT/init"
	install -m 0755 "$BUSYBOX" "$ROOT/bin/busybox"
	for applet in sh modprobe insmod lsmod cat ls mount umount ip ps dmesg; do
		ln -s /bin/busybox "$ROOT/bin/$applet"
	done
	ln -s /bin/busybox "$ROOT/sbin/modprobe"
	# The kernel opens /dev/console for PID 1 before anything mounts devtmpfs.
	mknod -m 0600 "$ROOT/dev/console" c 5 1
	mknod -m 0666 "$ROOT/dev/null" c 1 3

	say "collecting modules: ${MODULES[*]}"
	MODDIR=$KDIR/lib/modules/$KVER
	# Resolve dependencies in a hard-linked copy so the shared kernel dir stays untouched.
	mkdir -p "$WORK/kmeta/lib/modules"
	cp -al "$MODDIR" "$WORK/kmeta/lib/modules/" 2>/dev/null || cp -a "$MODDIR" "$WORK/kmeta/lib/modules/"
	depmod -b "$WORK/kmeta" "$KVER"
	mapfile -t objs < <(
		for m in "${MODULES[@]}"; do
			modprobe -d "$WORK/kmeta" -S "$KVER" --show-depends "$m" ||
				die "module $m is not in kernel $KVER"
		done | awk '$1 == "insmod" { print $2 }' | sort -u
	)
	for obj in "${objs[@]}"; do
		rel=${obj#"$WORK/kmeta/lib/modules/$KVER/"}
		mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$rel")"
		cp "$MODDIR/$rel" "$ROOT/lib/modules/$KVER/$rel"
	done
	cp "$MODDIR"/modules.order "$MODDIR"/modules.builtin* "$ROOT/lib/modules/$KVER/"
	depmod -b "$ROOT" "$KVER"
	say "${#objs[@]} modules"

	say "packing initrd.img"
	(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --owner 0:0 --quiet) | gzip -9n >"$WORK/initrd.img"
	cp "$KDIR/vmlinuz" "$WORK/vmlinuz"
	# Under TCG, unpacking the compressed bzImage takes longer than booting the kernel.
	# The uncompressed ELF boots straight through its PVH entry note (Xen note type 18)
	# when the kernel has one; the engine then prefers it.
	say "extracting vmlinux from vmlinuz"
	pvh=no
	offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$KDIR/vmlinuz" | head -n1 | cut -d: -f1 || true)
	if [[ -n $offset ]]; then
		tail -c "+$((offset + 1))" "$KDIR/vmlinuz" | xz -dcq >"$WORK/vmlinux" 2>/dev/null || true
		if readelf -n "$WORK/vmlinux" 2>/dev/null | grep -q 'Unknown note type: (0x00000012)'; then
			pvh=yes
		else
			rm -f "$WORK/vmlinux"
		fi
	fi
	[[ $pvh == yes ]] || say "no PVH-bootable vmlinux (the engine boots vmlinuz, slower under TCG)"
	cat >"$WORK/manifest.json" <<EOF
{
  "build": "$hash",
  "kernelRelease": "$KVER",
  "kernelPackage": "$(basename "$KDIR")",
  "pvh": $([[ $pvh == yes ]] && echo true || echo false),
  "modules": "$(printf '%s ' "${MODULES[@]}" | sed 's/ $//')",
  "agent": "hcr-agent 1 ($hash)",
  "builtAt": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
	TMPDEST=$OUT_ROOT/.$hash.tmp
	rm -rf "$TMPDEST"
	mkdir -p "$TMPDEST"
	mv "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/manifest.json" "$TMPDEST/"
	[[ $pvh == no ]] || mv "$WORK/vmlinux" "$TMPDEST/"
	rm -rf "$DEST"
	mv "$TMPDEST" "$DEST"
	say "initrd.img $(du -h "$DEST/initrd.img" | cut -f1), vmlinuz $(du -h "$DEST/vmlinuz" | cut -f1)$([[ $pvh == no ]] || echo ", vmlinux $(du -h "$DEST/vmlinux" | cut -f1)")"
fi

# Switch `current` atomically (rename over the old link).
ln -sfn "$hash" "$OUT_ROOT/.current.tmp"
mv -T "$OUT_ROOT/.current.tmp" "$OUT_ROOT/current"

# Keep the current build and the one before it; older ones only cost disk.
mapfile -t old < <(find "$OUT_ROOT" -mindepth 1 -maxdepth 1 -type d ! -name '.*' ! -name "$hash" -printf '%T@ %p\n' |
	sort -rn | tail -n +2 | cut -d' ' -f2-)
for dir in "${old[@]}"; do
	say "removing old build $(basename "$dir")"
	rm -rf "$dir"
done

echo "$DEST"
