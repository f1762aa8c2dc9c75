#!/usr/bin/env bash
# setup-assets.sh — build the unikernel engine's test images from this repo's
# own sources (no downloads besides Debian's kernel package) and push them to
# the local registry:
#
#   hcr-test/unikernel-hello:latest  type unikraft: guest/hello, a freestanding
#                                    PVH ELF that prints its command line on
#                                    COM1 and exits through isa-debug-exit
#   hcr-test/unikernel-http:latest   type linux: Debian's kernel plus an initrd
#                                    whose only program (guest/http/init.c)
#                                    serves HTTP on port 8080
#
# Both carry the urunc annotations as image labels. Idempotent: an image whose
# inputs (sources, kernel, compiler, this script) hash to the stamp recorded by
# the last build, and which the registry still serves, is not rebuilt.
# Called by scripts/setup.sh after dockerd and the registry are up.
#
# Environment:
#   HCR_REGISTRY        registry host:port           (default 127.0.0.1:5000)
#   HCR_ASSET_DIR       build outputs and stamps     (default /var/lib/hcr/assets)
#   DOCKER              docker client                (default /usr/bin/docker if present)
#   HCR_SETUP_QUIET=1   only errors and the image lines
# Prints one line per image on stdout: <registry>/<repo>:<tag>
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PKG=$(dirname "$HERE")
REPO_ROOT=$(cd "$PKG/../.." && pwd)
REGISTRY=${HCR_REGISTRY:-127.0.0.1:5000}
ASSETS=${HCR_ASSET_DIR:-/var/lib/hcr/assets}
OUT=$ASSETS/unikernel
if [[ -z ${DOCKER:-} ]]; then
	if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
export DOCKER_BUILDKIT=0
QUIET=${HCR_SETUP_QUIET:-0}

log() { [[ $QUIET == 1 ]] || echo "unikernel-assets: $*" >&2; }
die() {
	echo "unikernel-assets: ERROR: $*" >&2
	exit 1
}

for tool in gcc ld cpio gzip curl sha256sum "$DOCKER"; do
	command -v "$tool" >/dev/null || die "$tool not found (run scripts/setup.sh)"
done
"$DOCKER" info >/dev/null 2>&1 || die "docker daemon not reachable with $DOCKER (run scripts/setup.sh)"
curl -fsS -o /dev/null "http://$REGISTRY/v2/" || die "no registry answering on http://$REGISTRY/v2/ (run scripts/setup.sh)"
mkdir -p "$OUT"

# registry_has REPO: the registry serves REPO:latest.
registry_has() {
	curl -fsS -o /dev/null -I \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		"http://$REGISTRY/v2/$1/manifests/latest" 2>/dev/null
}

# up_to_date NAME HASH: the last build of NAME had inputs HASH and is still served.
up_to_date() {
	[[ -f $OUT/$1.stamp && $(cat "$OUT/$1.stamp") == "$2" ]] && registry_has "hcr-test/$1"
}

# publish NAME CONTEXT HASH: build CONTEXT/Dockerfile as hcr-test/NAME:latest and push it.
publish() {
	local name=$1 ctx=$2 hash=$3 ref=$REGISTRY/hcr-test/$1:latest
	log "building $ref"
	if [[ $QUIET == 1 ]]; then
		"$DOCKER" build -q -t "$ref" "$ctx" >/dev/null
		"$DOCKER" push "$ref" >/dev/null
	else
		"$DOCKER" build -t "$ref" "$ctx" >&2
		"$DOCKER" push "$ref" >&2
	fi
	echo "$hash" >"$OUT/$name.stamp"
}

CFLAGS_FREESTANDING=(-m32 -march=i686 -ffreestanding -fno-pic -fno-pie -fno-stack-protector
	-fno-asynchronous-unwind-tables -nostdlib -O2 -Wall -Wextra -Werror)
compiler=$(gcc --version | head -n1)

# ------------------------------------------------------------------- hello
hello_src=$PKG/guest/hello
hello_hash=$(cat "${BASH_SOURCE[0]}" "$hello_src"/* <(echo "$compiler") | sha256sum | cut -c1-64)
if up_to_date unikernel-hello "$hello_hash"; then
	log "hcr-test/unikernel-hello is up to date"
else
	ctx=$OUT/hello.build
	rm -rf "$ctx"
	mkdir -p "$ctx"
	gcc "${CFLAGS_FREESTANDING[@]}" -c "$hello_src/pvh.S" -o "$ctx/pvh.o"
	gcc "${CFLAGS_FREESTANDING[@]}" -c "$hello_src/hello.c" -o "$ctx/hello.o"
	ld -m elf_i386 -nostdlib -static -z noexecstack --no-warn-rwx-segments \
		-T "$hello_src/hello.ld" -o "$ctx/hello" "$ctx/pvh.o" "$ctx/hello.o"
	rm -f "$ctx"/*.o
	cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY hello /unikernel/hello
LABEL com.urunc.unikernel.unikernelType="unikraft" \
      com.urunc.unikernel.hypervisor="qemu" \
      com.urunc.unikernel.binary="/unikernel/hello" \
      com.urunc.unikernel.cmdline="exit=0" \
      com.urunc.unikernel.unikernelVersion="0.17.0"
DOCKERFILE
	publish unikernel-hello "$ctx" "$hello_hash"
	cp "$ctx/hello" "$OUT/hello.elf"
fi
echo "$REGISTRY/hcr-test/unikernel-hello:latest"

# -------------------------------------------------------------------- http
kernel_dir=$("$REPO_ROOT/packages/engine-hyper/scripts/guest-kernel.sh")
kver=$(cat "$kernel_dir/kver")
http_src=$PKG/guest/http
http_hash=$(cat "${BASH_SOURCE[0]}" "$http_src"/* <(echo "$compiler $kernel_dir") | sha256sum | cut -c1-64)
# Dependency order: finit_module does not resolve dependencies.
MODULES=(virtio_ring virtio virtio_mmio failover net_failover virtio_net button evdev)
if up_to_date unikernel-http "$http_hash"; then
	log "hcr-test/unikernel-http is up to date"
else
	ctx=$OUT/http.build
	root=$OUT/http.initrd
	rm -rf "$ctx" "$root"
	mkdir -p "$ctx" "$root"/{dev,proc,sys,lib/modules}
	gcc -static -O2 -Wall -Wextra -Werror -o "$root/init" "$http_src/init.c"
	strip "$root/init"
	mknod -m 600 "$root/dev/console" c 5 1
	for m in "${MODULES[@]}"; do
		ko=$(find "$kernel_dir/lib/modules/$kver" -name "$m.ko" -print -quit)
		[[ -n $ko ]] || die "module $m.ko not found under $kernel_dir/lib/modules/$kver"
		cp "$ko" "$root/lib/modules/"
		echo "$m" >>"$root/lib/modules/load"
	done
	# Fixed mtimes and no gzip timestamp keep the initrd byte-identical across builds.
	find "$root" -exec touch -h -d @0 {} +
	(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible | gzip -9n) >"$ctx/initrd.img"
	rm -rf "$root"
	cp "$kernel_dir/vmlinuz" "$ctx/vmlinuz"
	cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY vmlinuz /unikernel/vmlinuz
COPY initrd.img /unikernel/initrd.img
LABEL com.urunc.unikernel.unikernelType="linux" \
      com.urunc.unikernel.hypervisor="qemu" \
      com.urunc.unikernel.binary="/unikernel/vmlinuz" \
      com.urunc.unikernel.initrd="/unikernel/initrd.img" \
      com.urunc.unikernel.cmdline="/init 8080"
DOCKERFILE
	publish unikernel-http "$ctx" "$http_hash"
	cp "$ctx/vmlinuz" "$ctx/initrd.img" "$OUT/"
fi
echo "$REGISTRY/hcr-test/unikernel-http:latest"
