#!/usr/bin/env bash
# setup.sh — prepare a Debian 12 host (as root) to build, test and run HCR.
# Idempotent: every step checks first and does nothing when already done, so a
# second run takes seconds (plus `pnpm -r build`).
#
#   bash scripts/setup.sh [--no-images] [--quiet]
#
#   --no-images  skip test/fixtures/build-images.sh
#   --quiet      print only warnings, errors and the final line; command output
#                goes to /var/log/hcr/setup.log
#
# Steps: apt packages -> kernel modules, ip_forward -> dockerd -> local image
# registry (127.0.0.1:5000) -> CNI config -> fixture images (test/fixtures/
# build-images.sh) -> pnpm install + build -> packages/*/scripts/setup-assets.sh.
#
# Environment: HCR_REGISTRY (host:port, default 127.0.0.1:5000).
# Daemons started here run detached; their logs are in /var/log/hcr and their
# pids in /run/hcr-dockerd.pid and /run/hcr-registry.pid.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PNPM_VERSION=10.34.8
LOG_DIR=/var/log/hcr
SETUP_LOG=$LOG_DIR/setup.log
REGISTRY=${HCR_REGISTRY:-127.0.0.1:5000}
REGISTRY_DIR=/var/lib/hcr-registry
REGISTRY_PIDFILE=/run/hcr-registry.pid
DOCKERD_PIDFILE=/run/hcr-dockerd.pid
CNI_CONF_DIR=/etc/cni/net.d
CNI_CONFLIST=$CNI_CONF_DIR/10-hcr-bridge.conflist

# Debian packages the host needs.  Not `busybox`: it conflicts with
# busybox-static, and the fixture images fetch it with `apt-get download`.
# No kernel either: the hyper engine's setup-assets.sh downloads its own.
PACKAGES=(
	docker.io containernetworking-plugins docker-registry
	busybox-static qemu-system-x86 iptables cpio kmod runc iproute2 socat
	curl ca-certificates xz-utils gcc libc6-dev libseccomp-dev make python3
)
OPTIONAL_PACKAGES=(runsc) # installed when apt has them, skipped otherwise

IMAGES=1
QUIET=0
for arg in "$@"; do
	case $arg in
	--no-images) IMAGES=0 ;;
	--quiet | -q) QUIET=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "setup: unknown argument: $arg (try --help)" >&2
		exit 2
		;;
	esac
done

say() { [[ $QUIET == 1 ]] || echo "setup: $*"; }
warn() { echo "setup: WARNING: $*" >&2; }
die() {
	echo "setup: ERROR: $*" >&2
	exit 1
}

# run CMD...: in quiet mode, send the output to $SETUP_LOG and show its tail
# only if CMD fails.
run() {
	local rc=0
	if [[ $QUIET == 1 ]]; then
		echo "+ $*" >>"$SETUP_LOG"
		"$@" >>"$SETUP_LOG" 2>&1 || rc=$?
		if ((rc != 0)); then
			echo "setup: command failed (exit $rc): $*; end of $SETUP_LOG:" >&2
			tail -n 25 "$SETUP_LOG" >&2
		fi
		return $rc
	fi
	"$@"
}

[[ $(id -u) == 0 ]] || die "run me as root"
[[ -r /etc/debian_version ]] || warn "not a Debian system; apt steps will probably fail"
mkdir -p "$LOG_DIR"
# One setup at a time: concurrent pnpm installs in one tree break native
# builds. The daemons started below must not inherit fd 9.
exec 9>/run/hcr-setup.lock
if ! flock -n 9; then
	say "waiting for another setup.sh to finish"
	flock 9
fi
[[ $QUIET == 1 ]] && echo "=== setup.sh $(date -Is)" >>"$SETUP_LOG"
START=$SECONDS
cd "$ROOT"
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- packages
installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]; }
apt_candidate() { # prints the candidate version, empty if apt has none
	apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" { print $2 }'
}

missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
updated=0
if ((${#missing[@]})); then
	say "apt-get update (missing: ${missing[*]})"
	run apt-get update -q || die "apt-get update failed"
	updated=1
	say "installing ${missing[*]}"
	run apt-get install -y -q --no-install-recommends "${missing[@]}" ||
		die "apt-get install ${missing[*]} failed"
else
	say "apt packages: all ${#PACKAGES[@]} present"
fi
for p in "${OPTIONAL_PACKAGES[@]}"; do
	installed "$p" && continue
	if [[ -z $(apt_candidate "$p") ]] && ((updated == 0)); then
		say "apt-get update (looking for optional $p)"
		run apt-get update -q || warn "apt-get update failed"
		updated=1
	fi
	if [[ -n $(apt_candidate "$p") ]]; then
		say "installing optional $p"
		run apt-get install -y -q --no-install-recommends "$p" || warn "could not install $p (optional, ignored)"
	else
		say "optional $p is not available from apt; skipped"
	fi
done

# ------------------------------------------------------ kernel and sysctls
for mod in overlay br_netfilter; do
	if [[ -d /sys/module/$mod ]]; then
		continue
	elif modprobe "$mod" 2>/dev/null; then
		say "loaded kernel module $mod"
	else
		say "could not load kernel module $mod (ignored)"
	fi
done
if [[ $(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null) != 1 ]]; then
	if sysctl -qw net.ipv4.ip_forward=1 2>/dev/null; then
		say "enabled net.ipv4.ip_forward"
	else
		warn "could not set net.ipv4.ip_forward=1 (pod traffic off the host may not work)"
	fi
fi

# ----------------------------------------------------------------- dockerd
# Debian's dockerd is 20.10 (API 1.41); /usr/local/bin/docker may be a newer
# client, so talk to it with Debian's own client.
if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
export DOCKER
docker_up() { "$DOCKER" info >/dev/null 2>&1; }
alive() { # PID [COMM]: process PID exists (and runs a program named COMM)
	[[ -n $1 ]] && kill -0 "$1" 2>/dev/null &&
		[[ -z ${2:-} || $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]]
}
pidfile_pid() { cat "$1" 2>/dev/null || true; }
# await CHECK PID COMM SECONDS: 0 once CHECK passes; 1 if process PID is gone
# before that; 2 after SECONDS. An empty COMM skips the name check (a process
# just started may still be setsid when it is first looked at).
await() {
	local check=$1 pid=$2 comm=$3 i
	for ((i = 0; i < $4 * 2; i++)); do
		"$check" && return 0
		alive "$pid" "$comm" || { "$check" && return 0 || return 1; }
		sleep 0.5
	done
	"$check" && return 0 || return 2
}

if docker_up; then
	say "dockerd is running"
else
	rc=1
	pid=$(pidfile_pid "$DOCKERD_PIDFILE")
	if alive "$pid" dockerd; then
		say "dockerd (pid $pid) is not answering yet; waiting"
		await docker_up "$pid" dockerd 60 && rc=0 || rc=$?
		((rc == 1)) && say "that dockerd exited"
	fi
	if ((rc == 1)); then
		command -v dockerd >/dev/null || die "dockerd not found (package docker.io)"
		rm -f "$DOCKERD_PIDFILE" # dockerd refuses to start over a live pid in it
		say "starting dockerd (log $LOG_DIR/dockerd.log)"
		setsid dockerd --pidfile "$DOCKERD_PIDFILE" >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null 9>&- &
		await docker_up $! "" 60 && rc=0 || rc=$?
	fi
	if ((rc != 0)); then
		tail -n 20 "$LOG_DIR/dockerd.log" >&2 || true
		((rc == 1)) && die "dockerd exited; see $LOG_DIR/dockerd.log"
		die "dockerd did not answer within 60 s; see $LOG_DIR/dockerd.log"
	fi
	say "dockerd is up (pid $(cat "$DOCKERD_PIDFILE" 2>/dev/null || echo '?'))"
fi
server_version=$("$DOCKER" version -f '{{.Server.Version}}' 2>/dev/null || echo '?')
say "docker server $server_version, storage driver $("$DOCKER" info -f '{{.Driver}}' 2>/dev/null || echo '?')"
if [[ $DOCKER == /usr/bin/docker ]] && command -v docker >/dev/null &&
	[[ $(command -v docker) != /usr/bin/docker ]] && ! docker info >/dev/null 2>&1; then
	warn "$(command -v docker) cannot talk to dockerd $server_version; use /usr/bin/docker or set DOCKER_API_VERSION=1.41"
fi

# ---------------------------------------------------------------- registry
registry_up() { curl -fsS -o /dev/null --max-time 5 "http://$REGISTRY/v2/" 2>/dev/null; }

if registry_up; then
	say "registry answers on $REGISTRY"
else
	command -v docker-registry >/dev/null || die "docker-registry not found (package docker-registry)"
	if [[ -d /run/systemd/system ]] && systemctl -q is-active docker-registry 2>/dev/null; then
		say "stopping Debian's docker-registry service (it holds :5000 with its own config)"
		run systemctl disable --now docker-registry || warn "could not stop docker-registry.service"
	fi
	rc=1
	pid=$(pidfile_pid "$REGISTRY_PIDFILE")
	if alive "$pid" docker-registry; then
		say "registry (pid $pid) is not answering yet; waiting"
		await registry_up "$pid" docker-registry 30 && rc=0 || rc=$?
		((rc == 1)) && say "that registry exited"
	fi
	if ((rc == 1)); then
		mkdir -p "$REGISTRY_DIR/data"
		cat >"$REGISTRY_DIR/config.yml" <<EOF
# written by HCR scripts/setup.sh
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
		say "starting docker-registry on $REGISTRY (data in $REGISTRY_DIR, log $LOG_DIR/registry.log)"
		setsid docker-registry serve "$REGISTRY_DIR/config.yml" >>"$LOG_DIR/registry.log" 2>&1 </dev/null 9>&- &
		echo $! >"$REGISTRY_PIDFILE"
		await registry_up $! "" 30 && rc=0 || rc=$?
	fi
	if ((rc != 0)); then
		tail -n 20 "$LOG_DIR/registry.log" >&2 || true
		((rc == 1)) && die "docker-registry exited; see $LOG_DIR/registry.log"
		die "registry did not answer on http://$REGISTRY/v2/ within 30 s; see $LOG_DIR/registry.log"
	fi
	say "registry is up (pid $(cat "$REGISTRY_PIDFILE"))"
fi

# --------------------------------------------------------------------- CNI
# Debian installs the plugins in /usr/lib/cni; give them the usual path too.
if [[ ! -e /opt/cni/bin && -d /usr/lib/cni ]]; then
	mkdir -p /opt/cni
	ln -s /usr/lib/cni /opt/cni/bin
	say "linked /opt/cni/bin -> /usr/lib/cni"
fi
mkdir -p "$CNI_CONF_DIR"
shopt -s nullglob
cni_confs=("$CNI_CONF_DIR"/*.conflist "$CNI_CONF_DIR"/*.conf)
shopt -u nullglob
if ((${#cni_confs[@]})); then
	say "CNI config present: ${cni_confs[*]}"
else
	say "writing $CNI_CONFLIST (bridge hcr0, 10.88.0.0/16, portmap, firewall)"
	# firewall: dockerd sets the FORWARD policy to DROP; the plugin admits pod traffic.
	cat >"$CNI_CONFLIST.tmp" <<'EOF'
{
  "cniVersion": "1.0.0",
  "name": "hcr",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "hcr0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    {
      "type": "portmap",
      "capabilities": { "portMappings": true }
    },
    {
      "type": "firewall"
    }
  ]
}
EOF
	python3 -m json.tool "$CNI_CONFLIST.tmp" >/dev/null || die "generated CNI config is not valid JSON"
	mv "$CNI_CONFLIST.tmp" "$CNI_CONFLIST"
fi

# ------------------------------------------------------------------ images
if ((IMAGES)); then
	say "building fixture images (test/fixtures/build-images.sh)"
	if [[ $QUIET == 1 ]]; then
		HCR_REGISTRY=$REGISTRY HCR_FIXTURES_QUIET=1 run bash test/fixtures/build-images.sh ||
			die "fixture images failed"
	else
		HCR_REGISTRY=$REGISTRY bash test/fixtures/build-images.sh | sed 's/^/setup: image /' ||
			die "fixture images failed"
	fi
else
	say "skipping fixture images (--no-images)"
fi

# -------------------------------------------------------------------- pnpm
if ! command -v pnpm >/dev/null; then
	say "installing pnpm@$PNPM_VERSION with npm"
	run npm install -g --no-fund --no-audit "pnpm@$PNPM_VERSION" || die "npm install -g pnpm failed"
	hash -r
fi
say "pnpm $(pnpm --version)"

# Until the workspace packages exist, a failing install/build is expected.
if [[ -f packages/core/package.json ]]; then early=0; else early=1; fi
js_step() { # DESCRIPTION CMD...
	local what=$1
	shift
	say "$what"
	run "$@" && return 0
	((early)) || die "$what failed"
	warn "$what failed; tolerated because packages/core/package.json does not exist yet"
	return 0
}
export CI=${CI:-true} # pnpm: no interactive prompts
# Native addons (better-sqlite3) cannot download prebuilt binaries here: build
# them against Debian's Node headers instead of fetching a header tarball.
if [[ -z ${npm_config_nodedir:-} && -f /usr/include/node/node.h ]]; then
	export npm_config_nodedir=/usr
fi
if [[ -f pnpm-lock.yaml ]]; then
	js_step "pnpm install --frozen-lockfile" pnpm install --frozen-lockfile
else
	js_step "pnpm install (no pnpm-lock.yaml yet)" pnpm install --no-frozen-lockfile
fi
js_step "pnpm -r build" pnpm -r build

# ------------------------------------------------------------------ assets
shopt -s nullglob
for script in packages/*/scripts/setup-assets.sh; do
	if [[ -x $script ]]; then
		say "running $script"
		HCR_SETUP_QUIET=$QUIET run "./$script" || die "$script failed"
	else
		warn "$script is not executable; skipped"
	fi
done
shopt -u nullglob

if [[ $QUIET == 1 ]]; then
	echo "setup: done in $((SECONDS - START)) s"
else
	say "done in $((SECONDS - START)) s"
fi
