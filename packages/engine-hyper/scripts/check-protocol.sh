#!/usr/bin/env bash
# check-protocol.sh - fail when the committed agent protocol code differs from
# what scripts/gen-protocol.ts makes of protocol/agent.json (run in CI; after
# editing the schema run `npx tsx packages/engine-hyper/scripts/gen-protocol.ts`).
set -euo pipefail
PKG=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
(cd "$PKG" && npx tsx scripts/gen-protocol.ts "$out")
rc=0
for f in src/protocol/wire.gen.ts guest/agent/wire.gen.h guest/agent/wire.gen.c; do
	if ! diff -u "$PKG/$f" "$out/$f"; then
		echo "check-protocol: $f is stale; regenerate it with scripts/gen-protocol.ts" >&2
		rc=1
	fi
done
((rc == 0)) && echo "check-protocol: generated code matches protocol/agent.json"
exit $rc
