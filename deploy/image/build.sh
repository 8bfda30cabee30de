#!/usr/bin/env bash
# make image: build the project's image with `docker build`, offline if need be.
#
#   1. wheels: `pip wheel` on this machine resolves the project and its dependencies into
#      build/image/wheels (the only packages the image installs: `pip install --no-index`);
#   2. base: the official python image (BASE_IMAGE, default python:3.11.13-slim-bookworm) when it is
#      present or can be pulled; otherwise a local base built from Debian's packages with debootstrap
#      (python3, python3-venv) and `docker import`, tagged tradevine-gateway/python-base:local;
#   3. docker build --build-arg BASE_IMAGE=... -t IMAGE (default tradevine-gateway:local).
# Environment: IMAGE, BASE_IMAGE, LOCAL_BASE=1 (skip the official base), DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-tradevine-gateway:local}
OFFICIAL=${BASE_IMAGE:-python:3.11.13-slim-bookworm}
LOCAL=tradevine-gateway/python-base:local
SUITE=bookworm
PYTHON=${PYTHON:-.venv/bin/python}
log() { printf '[image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker not found: install Docker (or run .ci/docker-rabbitmq, which starts a local engine)"
docker info >/dev/null 2>&1 || die "no Docker engine answers \`docker info\`; start one (e.g. bash .ci/docker-rabbitmq)"

wheels=build/image/wheels
rm -rf "$wheels" && mkdir -p "$wheels"
log "pip wheel .[postgres,otel] -> $wheels"
"$PYTHON" -m pip wheel --quiet --wheel-dir "$wheels" ".[postgres,otel]"

# Bumped whenever local_base changes what goes into the base, so an older local base is built again.
BASE_RECIPE=2

local_base() {
    if [[ $(docker image inspect "$LOCAL" --format '{{index .Config.Labels "tradevine.base-recipe"}}' 2>/dev/null) \
          == "$BASE_RECIPE" ]]; then
        log "local base $LOCAL already present"; return
    fi
    command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install debootstrap"
    local mirror tmp
    mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
    mirror=${mirror:-http://deb.debian.org/debian}
    tmp=$(mktemp -d /var/tmp/tradevine-python-base.XXXXXX)
    trap "rm -rf '$tmp'" EXIT
    log "debootstrap $SUITE minbase + python3, python3-venv from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$tmp/root" "$mirror" >"$tmp/log" 2>&1 || { tail -n 20 "$tmp/log" >&2; die "debootstrap failed"; }
    # Nothing at run time reads documentation or the programs' message translations (33 MB of
    # /usr/share/locale; Python's own codecs and messages need none of it).
    rm -rf "$tmp"/root/var/cache/apt/archives/*.deb "$tmp"/root/var/lib/apt/lists/* \
        "$tmp"/root/usr/share/doc/* "$tmp"/root/usr/share/man/* "$tmp"/root/usr/share/info/* \
        "$tmp"/root/usr/share/locale/* "$tmp"/root/usr/share/lintian "$tmp"/root/usr/share/bash-completion \
        "$tmp"/root/debootstrap
    # `python` as in the official image, so the Dockerfile is the same for both bases.
    ln -sf python3 "$tmp/root/usr/bin/python"
    tar -C "$tmp/root" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL tradevine.base-recipe=$BASE_RECIPE" \
        --message "Python from Debian $SUITE packages (tradevine-gateway deploy/image/build.sh)" \
        - "$LOCAL" >/dev/null
    rm -rf "$tmp"; trap - EXIT
    log "built $LOCAL"
}

base=$OFFICIAL
if [[ ${LOCAL_BASE:-0} == 1 ]]; then
    local_base; base=$LOCAL
elif docker image inspect "$OFFICIAL" >/dev/null 2>&1; then
    log "base $OFFICIAL present"
elif timeout 60 docker pull --quiet "$OFFICIAL" >/dev/null 2>&1; then
    log "pulled $OFFICIAL"
else
    log "$OFFICIAL cannot be pulled here; building a local base from Debian packages instead"
    local_base; base=$LOCAL
fi

log "docker build --build-arg BASE_IMAGE=$base -t $IMAGE"
DOCKER_BUILDKIT=0 docker build --quiet --build-arg "BASE_IMAGE=$base" -t "$IMAGE" . >/dev/null
log "built $IMAGE ($(docker image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'); base $base)"
echo "$IMAGE"
