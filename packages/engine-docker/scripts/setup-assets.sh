#!/usr/bin/env bash
# setup-assets.sh - build the docker engine's pause program (pause/pause.c) as
# a static binary. The engine imports it into dockerd as the infra image
# `hcr.local/pause:<sha256 prefix of the binary>` the first time a pod needs it.
#
#   setup-assets.sh            build if the source changed, print the binary path
#   HCR_ASSET_DIR=/path ...    asset root (default /var/lib/hcr/assets)
#
# Output: $HCR_ASSET_DIR/pause/pause, plus pause.src-sha256 recording which
# source it was built from (a rebuild happens only when pause.c changes).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$HERE/pause/pause.c
DEST_DIR=${HCR_ASSET_DIR:-/var/lib/hcr/assets}/pause
DEST=$DEST_DIR/pause
STAMP=$DEST_DIR/pause.src-sha256
log() { [[ ${HCR_SETUP_QUIET:-0} == 1 ]] || echo "engine-docker assets: $*" >&2; }

command -v gcc >/dev/null || { echo "engine-docker assets: ERROR: gcc not found (Debian: gcc libc6-dev)" >&2; exit 1; }
want=$(sha256sum "$SRC" | cut -d' ' -f1)
if [[ -x $DEST && -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
	log "pause is up to date ($DEST)"
	echo "$DEST"
	exit 0
fi

mkdir -p "$DEST_DIR"
tmp=$(mktemp "$DEST_DIR/.pause.XXXXXX")
trap 'rm -f "$tmp"' EXIT
gcc -static -O2 -Wall -Wextra -Werror -DHCR_PAUSE_VERSION="\"${want:0:12}\"" -o "$tmp" "$SRC"
strip "$tmp" 2>/dev/null || true
"$tmp" --version >/dev/null || { echo "engine-docker assets: ERROR: built pause does not run" >&2; exit 1; }
chmod 0755 "$tmp"
mv -f "$tmp" "$DEST"
echo "$want" >"$STAMP"
log "built $DEST ($(stat -c %s "$DEST") bytes)"
echo "$DEST"
