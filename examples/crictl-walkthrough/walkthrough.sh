#!/usr/bin/env bash
# walkthrough.sh — start HCR with every engine and run one pod on each with crictl,
# showing the router's decision. Needs crictl on PATH (cri-tools) and a host set up
# by scripts/setup.sh. Everything it makes lives under /tmp/hcr-walkthrough and is
# removed at the end.
#
#   bash examples/crictl-walkthrough/walkthrough.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=/tmp/hcr-walkthrough
SOCK=$WORK/hcr.sock
command -v crictl >/dev/null || { echo "crictl not found on PATH (install cri-tools)" >&2; exit 2; }
rm -rf "$WORK" && mkdir -p "$WORK/logs"/{docker,hyper,unikernel}
cat >"$WORK/config.toml" <<CFG
socket = "$SOCK"
state_dir = "$WORK/state"
runtime_dir = "$WORK/run"
[images]
root = "$WORK/images"
[router]
default_engine = "docker"
defer_binding = true
unikernel_engine = "unikernel"
[engines.docker]
kind = "docker"
[engines.hyper]
kind = "hyper"
[engines.unikernel]
kind = "unikernel"
[runtimes.docker]
engine = "docker"
[runtimes.hyper]
engine = "hyper"
[runtimes.unikernel]
engine = "unikernel"
CFG
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
# VM pods take seconds to boot under software emulation: crictl's default 2 s timeout is too short.
crictl() { command crictl --timeout 180s --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" "$@"; }

node --conditions=hcr-source --import tsx "$ROOT/packages/cri/src/bin.ts" serve --config "$WORK/config.toml" >"$WORK/hcr.log" 2>&1 &
HCR_PID=$!
cleanup() {
  for p in $(crictl pods -q 2>/dev/null); do crictl stopp "$p" >/dev/null 2>&1 || true; crictl rmp "$p" >/dev/null 2>&1 || true; done
  kill "$HCR_PID" 2>/dev/null || true
  wait "$HCR_PID" 2>/dev/null || true
  umount --lazy "$WORK/run/netns" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 100); do [[ -S $SOCK ]] && break; sleep 0.2; done

step crictl version
step crictl pull 127.0.0.1:5000/hcr-test/busybox:latest
step crictl pull 127.0.0.1:5000/hcr-test/unikernel-hello:latest

# crictl prints the verbose info map at the top level, each value parsed as JSON when it is.
decision() {
  crictl inspectp -o json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
i = d.get("info", d)
i = json.loads(i) if isinstance(i, str) else i
print("engine:", i["engine"], "| reason:", i["routing"]["reason"])'
}

echo; echo "== docker (no handler: the default engine) =="
P=$(crictl runp "$HERE/pod-docker.json")
C=$(crictl create "$P" "$HERE/container-busybox.json" "$HERE/pod-docker.json")
crictl start "$C" >/dev/null
decision "$P"
step crictl exec -s "$C" uname -r

echo; echo "== hyper (RuntimeClass handler \"hyper\": its own VM and kernel) =="
P=$(crictl runp --runtime hyper "$HERE/pod-hyper.json")
C=$(crictl create "$P" "$HERE/container-busybox.json" "$HERE/pod-hyper.json")
crictl start "$C" >/dev/null
decision "$P"
step crictl exec -s "$C" uname -r

echo; echo "== unikernel (no handler: bound by its image) =="
P=$(crictl runp "$HERE/pod-unikernel.json")
C=$(crictl create "$P" "$HERE/container-unikernel.json" "$HERE/pod-unikernel.json")
crictl start "$C" >/dev/null
sleep 2
decision "$P"
step crictl logs "$C"

step crictl pods
