#!/usr/bin/env bash
# Regenerates src/generated/ (TypeScript types for the CRI v1 protocol and
# HCR's pull-progress service) from proto/runtime/v1/api.proto and
# proto/hcr/v1/progress.proto. CI runs this with --check and fails on a diff.
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/generated
if [[ ${1:-} == --check ]]; then
	out=$(mktemp -d)
	trap 'rm -rf "$out"' EXIT
fi
rm -rf "${out:?}"/runtime "$out"/api.ts "$out"/hcr "$out"/progress.ts
node_modules/.bin/proto-loader-gen-types runtime/v1/api.proto hcr/v1/progress.proto \
	--keepCase=false --longs=String --enums=String --bytes=Buffer --defaults --oneofs \
	--grpcLib=@grpc/grpc-js --includeDirs=proto --outDir="$out" 2>/dev/null
# NodeNext ESM needs explicit extensions on relative imports.
find "$out" -name '*.ts' -exec sed -i -E "s#from '(\.\.?/[^']+)'#from '\1.js'#" {} +
# Formatting is part of the generated output, so the check compares like with like.
../../node_modules/.bin/prettier --config ../../.prettierrc.json --ignore-path /dev/null --log-level warn --write "$out" >/dev/null
if [[ ${1:-} == --check ]]; then
	diff -r "$out" src/generated >/dev/null || { echo "src/generated is stale: run packages/cri/scripts/gen-proto-types.sh" >&2; exit 1; }
	echo "generated CRI types are current"
fi
