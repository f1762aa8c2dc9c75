#!/usr/bin/env bash
# quickstart.sh — the README's two commands (Debian 12, as root).
#
#   bash scripts/quickstart.sh serve [ARGS...]   set up the host, then run the
#                                                CRI server: hcr serve --config $HCR_CONFIG ARGS...
#   bash scripts/quickstart.sh test              set up the host, then
#                                                pnpm typecheck, pnpm lint, pnpm test
#
# Environment:
#   HCR_CONFIG      config file for `serve` (default /etc/hcr/config.toml); written
#                   when missing, from `hcr config default` or the fallback below
#   HCR_SETUP_ARGS  extra arguments for scripts/setup.sh, e.g. "--quiet" or
#                   "--no-images" (default: none)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HCR_BIN=$ROOT/packages/cri/dist/bin.js
CONFIG=${HCR_CONFIG:-/etc/hcr/config.toml}
read -r -a SETUP_ARGS <<<"${HCR_SETUP_ARGS:-}"

say() { echo "quickstart: $*"; }
die() {
	echo "quickstart: ERROR: $*" >&2
	exit 1
}

# Written to $CONFIG when `hcr config default` is not available (yet).
fallback_config() {
	cat <<'EOF'
# HCR configuration: minimal fallback written by scripts/quickstart.sh
# (`hcr config default` was not available). One table per runtime handler;
# `engine` names the engine that runs pods of that handler.

[runtimes.docker]
engine = "docker"

[runtimes.hyper]
engine = "hyper"

[runtimes.unikernel]
engine = "unikernel"
EOF
}

setup() {
	say "running scripts/setup.sh${SETUP_ARGS[*]:+ ${SETUP_ARGS[*]}}"
	bash "$ROOT/scripts/setup.sh" "${SETUP_ARGS[@]}" || die "setup failed"
}

write_config() {
	[[ -s $CONFIG ]] && {
		say "using existing $CONFIG"
		return
	}
	mkdir -p "$(dirname "$CONFIG")"
	local tmp=$CONFIG.tmp.$$
	if node "$HCR_BIN" config default >"$tmp" 2>/dev/null && [[ -s $tmp ]]; then
		say "wrote $CONFIG (hcr config default)"
	else
		fallback_config >"$tmp"
		say "wrote $CONFIG (fallback: \`hcr config default\` is not available)"
	fi
	mv "$tmp" "$CONFIG"
}

cmd_serve() {
	setup
	[[ -f $HCR_BIN ]] || die "$HCR_BIN is missing; did \`pnpm -r build\` build packages/cri?"
	write_config
	say "exec node $HCR_BIN serve --config $CONFIG $*"
	cd "$ROOT"
	exec node "$HCR_BIN" serve --config "$CONFIG" "$@"
}

cmd_test() {
	local start=$SECONDS step t0 rc failed=0
	local -a summary=()
	setup
	cd "$ROOT"
	for step in typecheck lint test; do
		say "pnpm $step"
		t0=$SECONDS
		rc=0
		pnpm "$step" || rc=$?
		if ((rc == 0)); then
			summary+=("  ok    pnpm $step ($((SECONDS - t0)) s)")
		else
			summary+=("  FAIL  pnpm $step (exit $rc, $((SECONDS - t0)) s)")
			failed=1
		fi
	done
	echo
	say "summary ($((SECONDS - start)) s in all):"
	printf '%s\n' "  ok    setup" "${summary[@]}"
	if ((failed)); then
		say "FAILED"
		return 1
	fi
	say "all passed"
}

case ${1:-} in
serve)
	shift
	cmd_serve "$@"
	;;
test)
	shift
	(($# == 0)) || die "test takes no arguments (use HCR_SETUP_ARGS for setup flags)"
	cmd_test
	;;
*)
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
	;;
esac
