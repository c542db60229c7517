#!/usr/bin/env bash
# Build a Debian base image for deploy/docker/Dockerfile.* with no image registry:
# debootstrap a minimal root (minbase) from the Debian mirror, with python3 (3.11 on
# bookworm), python3-venv, libgomp1 and ca-certificates, trim it, then `docker import`.
#
#   deploy/base-image.sh                    # proxal/base:bookworm, skipped if it exists
#   BASE_IMAGE=my/base:tag deploy/base-image.sh --force
#
# Needs root, debootstrap (apt-get install debootstrap) and a running Docker daemon.
# Environment: BASE_IMAGE (default proxal/base:bookworm), DEBIAN_SUITE (default: this
# host's codename, else bookworm), DEBIAN_MIRROR (default: http://deb.debian.org/debian),
# DOCKER (default: docker).
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-proxal/base:bookworm}
DOCKER=${DOCKER:-docker}
if [[ -z ${DEBIAN_SUITE:-} ]]; then
    # shellcheck disable=SC1091
    DEBIAN_SUITE=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
fi
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FORCE=0
[[ ${1:-} == --force ]] && FORCE=1

log() { printf '[base-image] %s\n' "$*" >&2; }

if [[ $FORCE == 0 ]] && "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "$BASE_IMAGE exists; skipped (--force rebuilds it)"
    exit 0
fi
command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install -y debootstrap"; exit 1; }
[[ $(id -u) == 0 ]] || { log "debootstrap needs root"; exit 1; }

ROOT=$(mktemp -d /var/tmp/proxal-base.XXXXXX)
chmod 0755 "$ROOT" # becomes the image's /: mktemp's 0700 would lock out non-root users
cleanup() { rm -rf --one-file-system "$ROOT"; }
trap cleanup EXIT

start=$(date +%s)
log "debootstrap --variant=minbase $DEBIAN_SUITE from $DEBIAN_MIRROR into $ROOT"
timeout 1200 debootstrap --variant=minbase \
    --include=python3,python3-venv,libgomp1,ca-certificates \
    "$DEBIAN_SUITE" "$ROOT" "$DEBIAN_MIRROR" >"$ROOT.log" 2>&1 || {
    tail -n 30 "$ROOT.log" >&2
    rm -f "$ROOT.log"
    exit 1
}
rm -f "$ROOT.log"

# Security updates as in the official images, and no package caches, docs or locales.
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security $DEBIAN_SUITE-security main
EOF
# Like the official images: apt installs no recommends and keeps no .deb files.
cat >"$ROOT/etc/apt/apt.conf.d/90proxal-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
EOF
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* \
    "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
    "$ROOT"/usr/share/locale/* "$ROOT"/var/log/*.log "$ROOT"/var/cache/debconf/*-old
find "$ROOT/usr/lib/python3.11" -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
"$ROOT/usr/bin/python3" --version >/dev/null 2>&1 || chroot "$ROOT" python3 --version >/dev/null

log "docker import -> $BASE_IMAGE"
tar --numeric-owner -C "$ROOT" -c . | "$DOCKER" import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["/bin/bash"]' \
    -m "debootstrap --variant=minbase $DEBIAN_SUITE + python3 python3-venv libgomp1" \
    - "$BASE_IMAGE" >/dev/null
log "$BASE_IMAGE built in $(($(date +%s) - start)) s: $("$DOCKER" image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
