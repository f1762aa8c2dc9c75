#!/usr/bin/env bash
# measure-boot.sh — raw monitor launch to first console byte (and, for the
# linux image, to its server listening) for the two test unikernels, with
# QEMU started by hand exactly as the engine starts it (no HCR involved).
#
#   measure-boot.sh [RUNS]      default 5 runs per image; prints one line per image
#
# Needs the files setup-assets.sh leaves in $HCR_ASSET_DIR/unikernel.
set -euo pipefail

RUNS=${1:-5}
OUT=${HCR_ASSET_DIR:-/var/lib/hcr/assets}/unikernel
QEMU=${QEMU:-qemu-system-x86_64}
for f in hello.elf vmlinuz initrd.img; do
	[[ -f $OUT/$f ]] || { echo "measure-boot: $OUT/$f missing; run setup-assets.sh" >&2; exit 1; }
done
COMMON=(-accel tcg -nodefaults -no-user-config -display none -no-reboot -serial stdio
	-device isa-debug-exit,iobase=0xf4,iosize=0x04)
HELLO=("$QEMU" -M pc -m 256M "${COMMON[@]}" -kernel "$OUT/hello.elf" -append "hello -- exit=0")
LINUX=("$QEMU" -M microvm -m 256M "${COMMON[@]}" -kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img"
	-append "console=ttyS0 panic=-1 tsc_early_khz=2000000 no_timer_check rdinit=/init -- 8080")

now_us() { echo $(($(date +%s%N) / 1000)); }

# run_once PATTERN CMD...: prints "<first byte µs> <PATTERN µs>" for one launch.
run_once() {
	local pattern=$1
	shift
	local t0 first=0 line
	t0=$(now_us)
	exec 3< <(timeout 60 "$@" </dev/null 2>/dev/null)
	IFS= read -r -N 1 -u 3 _ && first=$(($(now_us) - t0))
	while IFS= read -r -u 3 line; do
		if [[ $line == *"$pattern"* ]]; then
			echo "$first $(($(now_us) - t0))"
			pkill -P $$ -f "^$QEMU" 2>/dev/null || true
			exec 3<&-
			return
		fi
	done
	exec 3<&-
	echo "$first -1"
}

stats() { # LABEL VALUES...: min / median / max in ms
	local label=$1
	shift
	sort -n <<<"$(printf '%s\n' "$@")" | awk -v l="$label" '{ v[NR] = $1 } END {
		printf "%s: min %.0f ms, median %.0f ms, max %.0f ms (%d runs)\n", l, v[1] / 1000, v[int((NR + 1) / 2)] / 1000, v[NR] / 1000, NR }'
}

for image in hello linux; do
	firsts=() ends=()
	for ((i = 0; i < RUNS; i++)); do
		if [[ $image == hello ]]; then
			read -r f e < <(run_once "exiting with code" "${HELLO[@]}")
		else
			read -r f e < <(run_once "listening on port" "${LINUX[@]}")
		fi
		firsts+=("$f")
		ends+=("$e")
	done
	stats "$image: launch -> first console byte" "${firsts[@]}"
	[[ $image == hello ]] && stats "hello: launch -> 'exiting with code'" "${ends[@]}"
	[[ $image == linux ]] && stats "linux: launch -> 'listening on port 8080'" "${ends[@]}"
done
