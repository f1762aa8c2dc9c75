#!/usr/bin/env bash
# fixtures.sh — build the images critest v1.26.1 pulls and push them to the
# local registry, under the upstream repository paths without the registry
# host (HCR's registry mirrors map gcr.io/… and registry.k8s.io/… there).
#
#   bash test/conformance/fixtures.sh [--quiet]
#
# Everything is built from the repository: the base is the integration tests'
# hcr-test/busybox image (test/fixtures/build-images.sh builds it if the
# registry lacks it), the rest are the recipes in fixtures/dockerfiles plus two
# small static C programs in fixtures/src.  What each image must do is in
# fixtures/images.list and docs/conformance.md.
#
# Idempotent: docker's build cache makes a rebuild a no-op, and a tag whose
# digest the registry already serves is not pushed again.
#
# Environment:
#   HCR_REGISTRY          registry host:port (default 127.0.0.1:5000)
#   HCR_CONFORMANCE_WORK  build context and stamps (default /var/cache/hcr/conformance-fixtures)
#   DOCKER                docker client (default /usr/bin/docker if present)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
FIX=$HERE/fixtures
REGISTRY=${HCR_REGISTRY:-127.0.0.1:5000}
WORK=${HCR_CONFORMANCE_WORK:-/var/cache/hcr/conformance-fixtures}
if [[ -z ${DOCKER:-} ]]; then
	if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
export DOCKER DOCKER_BUILDKIT=0
QUIET=0
[[ ${1:-} == --quiet || ${1:-} == -q ]] && QUIET=1
BASE_REF=$REGISTRY/hcr-test/busybox:latest
FIXTURE_BASE=hcr-conformance/busybox:latest

log() { [[ $QUIET == 1 ]] || echo "fixtures: $*" >&2; }
die() {
	echo "fixtures: ERROR: $*" >&2
	exit 1
}

for tool in "$DOCKER" gcc curl; do
	command -v "$tool" >/dev/null || die "$tool not found (run scripts/setup.sh)"
done
"$DOCKER" info >/dev/null 2>&1 || die "docker daemon not reachable with $DOCKER (run scripts/setup.sh)"
curl -fsS -o /dev/null "http://$REGISTRY/v2/" ||
	die "no registry answering on http://$REGISTRY/v2/ (run scripts/setup.sh)"

registry_digest() { # REPO TAG
	curl -fsS -o /dev/null -D - \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		"http://$REGISTRY/v2/$1/manifests/$2" 2>/dev/null |
		tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }' || true
}

if [[ -z $(registry_digest hcr-test/busybox latest) ]]; then
	log "the registry has no hcr-test/busybox yet; building the test images first"
	HCR_REGISTRY=$REGISTRY bash "$ROOT/test/fixtures/build-images.sh" --quiet >/dev/null
fi

# The build context: base/ (files laid over the busybox image), files/, and
# bin/ with the C programs compiled static so they run in any of the images.
ctx=$WORK/ctx
rm -rf "$ctx"
mkdir -p "$ctx/bin"
cp -a "$FIX/base" "$FIX/files" "$ctx/"
for src in "$FIX"/src/*.c; do
	gcc -static -O2 -s -Wall -Werror -o "$ctx/bin/$(basename "$src" .c)" "$src"
done
# Build-cache hits need identical metadata on every run. (Builds use
# --network none: no recipe needs a network, and dockerd's bridge may be absent.)
find "$ctx" -exec touch -h -d @0 {} +
chmod -R go-w "$ctx"

# tag_for DOCKERFILE [ARG=VALUE]: the local tag of one recipe + argument
tag_for() {
	echo "hcr-conformance/$1:$(echo "${2:-latest}" | tr '=:' '__' | tr '[:upper:]' '[:lower:]')"
}

declare -A BUILT=()
build() { # DOCKERFILE BASE [ARG=VALUE]
	local df=$1 base=$2 arg=${3:-} tag
	tag=$(tag_for "$df" "$arg")
	[[ -n ${BUILT[$tag]:-} ]] && return
	local args=(--build-arg "BASE=$base")
	[[ -n $arg ]] && args+=(--build-arg "$arg")
	log "building $tag"
	"$DOCKER" build -q --network none "${args[@]}" -t "$tag" -f "$FIX/dockerfiles/$df.Dockerfile" "$ctx" >/dev/null ||
		die "docker build of $tag failed"
	BUILT[$tag]=1
}

push() { # LOCAL_TAG REPO:TAG
	local src=$1 ref=$REGISTRY/$2 repo=${2%:*} tag=${2##*:} remote
	"$DOCKER" tag "$src" "$ref"
	remote=$(registry_digest "$repo" "$tag")
	if [[ -n $remote ]] &&
		"$DOCKER" image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$ref" |
		grep -qxF "$REGISTRY/$repo@$remote"; then
		log "$ref is up to date"
		return
	fi
	"$DOCKER" push -q "$ref" >/dev/null || die "docker push $ref failed"
	log "pushed $ref <- $src"
}

"$DOCKER" pull -q "$BASE_REF" >/dev/null || die "cannot pull $BASE_REF"
build busybox "$BASE_REF"
"$DOCKER" tag "$(tag_for busybox)" "$FIXTURE_BASE"

# One behavioural check per base image id: the specs rely on these applets.
stamp=$WORK/verified-base
id=$("$DOCKER" image inspect -f '{{.Id}}' "$FIXTURE_BASE")
if [[ ! -f $stamp || $(cat "$stamp") != "$id" ]]; then
	log "checking $FIXTURE_BASE"
	out=$("$DOCKER" run --rm --network none "$FIXTURE_BASE" \
		sh -c 'sleep 30 & pgrep sleep >/dev/null && echo pgrep-ok; ipcs -m | grep -q "Shared Memory" && echo ipcs-ok; kill $!') ||
		die "$FIXTURE_BASE failed its check"
	[[ $out == $'pgrep-ok\nipcs-ok' ]] || die "$FIXTURE_BASE: unexpected check output: $out"
	echo "$id" >"$stamp"
fi

while read -r ref df arg; do
	[[ -z $ref || $ref == \#* ]] && continue
	if [[ $df == busybox ]]; then
		push "$FIXTURE_BASE" "$ref"
		continue
	fi
	build "$df" "$FIXTURE_BASE" "$arg"
	push "$(tag_for "$df" "$arg")" "$ref"
done <"$FIX/images.list"

log "done: $(grep -cv '^\s*\(#\|$\)' "$FIX/images.list") images in $REGISTRY"
