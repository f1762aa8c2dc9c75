#!/usr/bin/env bash
# run.sh — run the CRI validation suite (critest) against HCR on one engine.
#
#   CRITEST=/path/to/critest bash test/conformance/run.sh ENGINE [-- critest flags]
#   ENGINE: docker | hyper | unikernel | all (the three in turn)
#   e.g.  run.sh docker
#         run.sh hyper -- -ginkgo.focus='Streaming'
#
# For each engine: builds/pushes the fixture images (fixtures.sh), writes an
# HCR config (that engine as default, registry mirrors that send the image
# names critest hard-codes to the local registry and never upstream, private
# state/runtime/image dirs and a private CNI network), starts `hcr serve` from
# the sources, runs critest serially with engines/<ENGINE>.yaml as the
# test-images file and the engine's skip rules (engines/<ENGINE>.tsv), stops
# HCR and checks that nothing leaked (pods, containers, netns, mounts, veths,
# CNI addresses, processes).
#
# A full run (no critest flags) is recorded in results/<ENGINE>.json and
# docs/conformance.md is re-rendered from all result files (render.py).
# A focused run only writes its output directory.
#
# Environment:
#   CRITEST       critest v1.26.1 binary (required; built outside the repository)
#   OUT           output directory (default /tmp/hcr-conformance/<UTC time>); one
#                 sub-directory per engine: junit.xml, report.json, critest.log,
#                 hcr.log, config.toml, summary.txt, leaks.txt
#   CRITEST_SEED  ginkgo seed for the spec order (default 1; "random" = ginkgo's own)
#   HCR_REGISTRY  local registry host:port (default 127.0.0.1:5000)
#   DOCKER        docker client (default /usr/bin/docker if present)
# Exit status: 0 when every spec that ran passed and nothing leaked, 1 otherwise,
# 2 on a usage or setup error.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REGISTRY=${HCR_REGISTRY:-127.0.0.1:5000}
CRITEST_SEED=${CRITEST_SEED:-1}
if [[ -z ${DOCKER:-} ]]; then
	if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
ENGINES=(docker hyper unikernel)
# Host ports the networking and streaming specs bind; they must be free.
CRITEST_PORTS=(12000 12001 12002 12003)

log() { echo "conformance: $*" >&2; }
die() {
	echo "conformance: ERROR: $*" >&2
	exit 2
}
usage() {
	sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

[[ $# -ge 1 ]] || usage
TARGET=$1
shift
[[ ${1:-} == -- ]] && shift
EXTRA=("$@")
case $TARGET in
docker | hyper | unikernel) RUN=("$TARGET") ;;
all) RUN=("${ENGINES[@]}") ;;
-h | --help) usage ;;
*) die "unknown engine \"$TARGET\" (docker, hyper, unikernel or all)" ;;
esac

[[ -n ${CRITEST:-} ]] ||
	die "set CRITEST to the critest binary (cri-tools v1.26.1, built outside this repository)"
[[ -x $CRITEST ]] || die "CRITEST=$CRITEST is not an executable file"
[[ $(id -u) == 0 ]] || die "run as root: HCR creates network namespaces, bridges and mounts"
for tool in node python3 ip curl ss "$DOCKER"; do
	command -v "$tool" >/dev/null || die "$tool not found (run scripts/setup.sh)"
done
for port in "${CRITEST_PORTS[@]}"; do
	if ss -Hltn "sport = :$port" | grep -q .; then
		die "host port $port is in use; critest's port-mapping and port-forward specs need ${CRITEST_PORTS[*]} free"
	fi
done

OUT=${OUT:-/tmp/hcr-conformance/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
log "fixture images"
bash "$HERE/fixtures.sh" --quiet || die "fixtures.sh failed"

# The engine's rules: "skip<TAB>regex<TAB>reason" lines become -ginkgo.skip flags.
skip_flags() { # ENGINE
	local kind regex _reason
	for f in "$HERE/engines/common.tsv" "$HERE/engines/$1.tsv"; do
		[[ -f $f ]] || continue
		while IFS=$'\t' read -r kind regex _reason; do
			[[ $kind == skip ]] && printf '%s\0' "-ginkgo.skip=$regex"
		done <"$f"
	done
}

# The config of the HCR instance under test; the instance is named
# conformance-<engine> so that its Docker objects can be told from those of
# other HCR instances on the host.
write_config() { # ENGINE WORKDIR BRIDGE SUBNET
	local engine=$1 w=$2 bridge=$3 subnet=$4 name=conformance-$1 host
	mkdir -p "$w/cni"
	cat >"$w/cni/10-conformance.conflist" <<-JSON
		{
		  "cniVersion": "1.0.0",
		  "name": "hcr-conformance-$engine",
		  "plugins": [
		    {
		      "type": "bridge",
		      "bridge": "$bridge",
		      "isGateway": true,
		      "ipMasq": false,
		      "hairpinMode": true,
		      "ipam": {
		        "type": "host-local",
		        "ranges": [[{ "subnet": "$subnet" }]],
		        "routes": [{ "dst": "0.0.0.0/0" }],
		        "dataDir": "$w/cni-ipam"
		      }
		    },
		    { "type": "portmap", "capabilities": { "portMappings": true } },
		    { "type": "firewall" }
		  ]
		}
	JSON
	{
		echo "# Written by test/conformance/run.sh for one critest run."
		echo "socket = \"$w/hcr.sock\""
		echo "state_dir = \"$w/state\""
		echo "runtime_dir = \"$w/run\""
		echo 'log_level = "info"'
		echo '[cni]'
		echo "conf_dir = \"$w/cni\""
		echo '[images]'
		echo "root = \"$w/images\""
		echo '[router]'
		echo "default_engine = \"$name\""
		echo 'defer_binding = false'
		echo "unikernel_engine = \"$name\""
		echo "[engines.$name]"
		echo "kind = \"$engine\""
		echo "[runtimes.$engine]"
		echo "engine = \"$name\""
		# critest's image names are hard-coded; "server" keeps HCR from ever
		# contacting the real hosts, even for an image the mirror lacks.
		for host in gcr.io registry.k8s.io docker.io; do
			echo "[registries.\"$host\"]"
			echo "mirrors = [\"http://$REGISTRY\"]"
			echo "server = \"http://$REGISTRY\""
		done
	} >"$w/config.toml"
}

HCR_PID=
start_hcr() { # WORKDIR LOG
	local w=$1 logfile=$2
	(cd "$ROOT" && exec node --conditions=hcr-source --import tsx packages/cri/src/bin.ts \
		serve --config "$w/config.toml") >"$logfile" 2>&1 &
	HCR_PID=$!
	for _ in $(seq 1 600); do
		grep -q 'hcr serving CRI v1' "$logfile" && return 0
		kill -0 "$HCR_PID" 2>/dev/null || {
			tail -n 30 "$logfile" >&2
			return 1
		}
		sleep 0.2
	done
	log "hcr serve did not start within 120 s"
	return 1
}

stop_hcr() {
	[[ -n $HCR_PID ]] || return 0
	kill -TERM "$HCR_PID" 2>/dev/null
	for _ in $(seq 1 300); do
		kill -0 "$HCR_PID" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$HCR_PID" 2>/dev/null; then
		log "hcr serve ignored SIGTERM for 60 s; killing it"
		kill -KILL "$HCR_PID" 2>/dev/null
	fi
	wait "$HCR_PID" 2>/dev/null
	HCR_PID=
}

# Pods critest did not remove: recorded as leaks, then removed so that the
# host is clean for the next run.
remove_pods() { # SOCKET LEAKS_FILE
	local ep=unix://$1 id
	for id in $(crictl --runtime-endpoint "$ep" --image-endpoint "$ep" pods -q 2>/dev/null); do
		echo "pod left by the run: $id" >>"$2"
		crictl --runtime-endpoint "$ep" stopp "$id" >/dev/null 2>&1
		crictl --runtime-endpoint "$ep" rmp "$id" >/dev/null 2>&1
	done
}

# Everything an HCR instance could leave on the host, scoped to this run's
# instance name, directories and bridge. Prints one line per leak.
find_leaks() { # ENGINE WORKDIR BRIDGE
	local engine=$1 w=$2 bridge=$3 name=conformance-$1 left pids
	left=$("$DOCKER" ps -a --filter "label=io.hcr.engine=$name" --format '{{.Names}}' 2>/dev/null)
	[[ -n $left ]] && echo "docker containers: ${left//$'\n'/ }"
	if [[ -d $w/run/netns ]]; then
		left=$(ls -A "$w/run/netns")
		[[ -n $left ]] && echo "network namespaces: ${left//$'\n'/ }"
	fi
	# The netns directory itself is made a mount point once (as `ip netns` does).
	left=$(awk -v w="$w" -v ns="$w/run/netns" 'index($5, w) == 1 && $5 != ns { print $5 }' /proc/self/mountinfo)
	[[ -n $left ]] && echo "mounts: ${left//$'\n'/ }"
	left=$(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{ print $2 }')
	[[ -n $left ]] && echo "veths on $bridge: ${left//$'\n'/ }"
	if [[ -d $w/cni-ipam ]]; then
		left=$(find "$w/cni-ipam" -type f -regex '.*/[0-9.]+' -printf '%f ')
		[[ -n $left ]] && echo "CNI addresses: $left"
	fi
	# VM monitors, supervisors and helpers all name a path under $w. The
	# pattern spells the dot of the mktemp name as [.] so that it does not
	# match grep's own command line.
	pids=$(grep -ls "${w//./[.]}" /proc/[0-9]*/cmdline | awk -F/ '{ print $3 }' || true)
	for pid in $pids; do
		left=$(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-200)
		[[ -n $left ]] && echo "process $pid: $left"
	done
}

# SysV shm segments of 1 MiB owned by nobody's process: the HostIpc specs
# make them with ipcmk on the host and never remove them.
shm_ids() { awk 'NR > 1 && $4 == 1048576 && $7 == 0 { print $2 }' /proc/sysvipc/shm | sort; }

# The run in progress, for teardown after an interrupt.
CUR_W=
CUR_BRIDGE=
teardown() { # [LEAKS_FILE]
	[[ -n $CUR_W ]] || return 0
	[[ -n $HCR_PID ]] && remove_pods "$CUR_W/hcr.sock" "${1:-/dev/null}"
	stop_hcr
	[[ -n ${1:-} ]] && find_leaks "$CUR_ENGINE" "$CUR_W" "$CUR_BRIDGE" >>"$1"
	umount --lazy "$CUR_W/run/netns" 2>/dev/null
	ip link del "$CUR_BRIDGE" 2>/dev/null
	rm -rf "$CUR_W"
	CUR_W=
}
trap 'log "interrupted; stopping hcr and removing its pods"; teardown; exit 130' INT TERM

run_engine() { # ENGINE INDEX
	local engine=$1 idx=$2 out=$OUT/$1 w bridge subnet rc=0 start end
	local -a skips cmd seed=()
	mkdir -p "$out"
	w=$(mktemp -d "/tmp/hcr-critest-$engine.XXXXXX")
	# One bridge and subnet per engine, so that a leftover of one run cannot
	# be mistaken for a leak of another.
	bridge=hcrconf$idx
	subnet=10.201.$idx.0/24
	CUR_W=$w CUR_BRIDGE=$bridge CUR_ENGINE=$engine
	[[ -f $HERE/engines/$engine.yaml ]] || die "no test-images file engines/$engine.yaml"
	write_config "$engine" "$w" "$bridge" "$subnet"
	python3 "$HERE/render.py" commit >"$out/hcr-commit"
	cp "$w/config.toml" "$w/cni/10-conformance.conflist" "$out/"
	log "$engine: starting hcr (work dir $w)"
	if ! start_hcr "$w" "$out/hcr.log"; then
		teardown
		log "$engine: hcr serve failed to start; see $out/hcr.log"
		return 2
	fi

	mapfile -d '' skips < <(skip_flags "$engine")
	[[ $CRITEST_SEED != random ]] && seed=(-ginkgo.seed="$CRITEST_SEED")
	cmd=("$CRITEST"
		--runtime-endpoint "unix://$w/hcr.sock"
		--image-endpoint "unix://$w/hcr.sock"
		--test-images-file "$HERE/engines/$engine.yaml"
		-ginkgo.no-color -ginkgo.v -ginkgo.timeout=2h
		-ginkgo.junit-report="$out/junit.xml"
		-ginkgo.json-report="$out/report.json"
		"${seed[@]}" "${skips[@]}" "${EXTRA[@]}")
	printf '%q ' "${cmd[@]}" >"$out/command.txt"
	echo >>"$out/command.txt"
	log "$engine: running critest (output in $out/critest.log)"
	shm_ids >"$out/.shm-before"
	start=$(date +%s)
	"${cmd[@]}" >"$out/critest.log" 2>&1 || rc=1
	end=$(date +%s)
	for id in $(shm_ids | comm -13 "$out/.shm-before" -); do ipcrm -m "$id" 2>/dev/null; done
	rm -f "$out/.shm-before"

	: >"$out/leaks.txt"
	teardown "$out/leaks.txt"
	if [[ -s $out/leaks.txt ]]; then
		log "$engine: LEAKS:"
		sed 's/^/  /' "$out/leaks.txt" >&2
		rc=1
	fi
	echo "$((end - start))" >"$out/seconds"

	python3 "$HERE/render.py" summary "$out" >"$out/summary.txt" || rc=2
	cat "$out/summary.txt"
	if [[ ${#EXTRA[@]} -eq 0 && -f $out/junit.xml ]]; then
		python3 "$HERE/render.py" record "$engine" "$out" || rc=2
	fi
	return $rc
}

status=0
for engine in "${RUN[@]}"; do
	for i in "${!ENGINES[@]}"; do [[ ${ENGINES[$i]} == "$engine" ]] && idx=$i; done
	run_engine "$engine" "$idx"
	rc=$?
	((rc > status)) && status=$rc
done
if [[ ${#EXTRA[@]} -eq 0 ]]; then
	python3 "$HERE/render.py" doc || status=2
	log "docs/conformance.md rendered from test/conformance/results/"
fi
log "results in $OUT"
exit $status
