#!/usr/bin/env bash
# Container smoke test without a Docker daemon or registry: build the image with buildah from a locally
# built Debian bookworm base, run it, POST a forecast on 127.0.0.1, check the server's user id.
#
#   sudo deploy/smoke.sh                 # TORCH_VARIANT=cpu, the fast one (offline torch wheel)
#   sudo TORCH_VARIANT=cuda deploy/smoke.sh
#
# Needs root, buildah and debootstrap (apt-get install buildah podman debootstrap). The base image is
# built once (debootstrap, ~1 min) and reused. For TORCH_VARIANT=cpu the torch CPU wheel is taken from
# TORCH_WHEEL_DIR if one is there (this machine's /opt/wheels), else from download.pytorch.org.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VARIANT=${TORCH_VARIANT:-cpu}
BASE=${BASE_IMAGE:-localhost/latentcast-base:bookworm}
TAG=${TAG:-localhost/latentcast:$VARIANT}
PORT=${PORT:-18000}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_WHEEL_DIR=${TORCH_WHEEL_DIR:-/opt/wheels}
CA_BUNDLE=${CA_BUNDLE:-$(python3 -m pip config get global.cert 2>/dev/null || echo /etc/ssl/certs/ca-certificates.crt)}
B=(buildah --storage-driver vfs)
step() { printf '== %s\n' "$*"; }

if ! "${B[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  step "base image $BASE: debootstrap bookworm with python3 and venv"
  work=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$work/root" "$MIRROR" \
    >"$work/debootstrap.log"
  rm -rf "$work"/root/var/cache/apt/archives/*.deb "$work"/root/var/lib/apt/lists/*
  tar -C "$work/root" -c . | podman --storage-driver vfs import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null 2>&1
  rm -rf "$work"
fi

if [ "${BUILD:-1}" = 1 ] || ! "${B[@]}" inspect --type image "$TAG" >/dev/null 2>&1; then
  step "build $TAG (TORCH_VARIANT=$VARIANT, BASE_IMAGE=$BASE) from commit $(git -C "$ROOT" rev-parse --short HEAD)"
  if [ "$VARIANT" = cpu ]; then
    find "$TORCH_WHEEL_DIR" -maxdepth 1 -name 'torch-*+cpu-*.whl' -exec cp -n {} "$ROOT/deploy/wheels/" \; 2>/dev/null || true
  fi
  if [ -f "$CA_BUNDLE" ]; then cp "$CA_BUNDLE" "$ROOT/deploy/certs/build-ca.crt"; fi
  start=$(date +%s)
  "${B[@]}" bud --isolation chroot --format docker --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_VARIANT="$VARIANT" \
    -t "$TAG" "$ROOT" >"${BUILD_LOG:-/tmp/latentcast-build-$VARIANT.log}" 2>&1
  step "built in $(( $(date +%s) - start )) s"
fi
step "image size: $(podman --storage-driver vfs image inspect --format '{{.Size}}' "$TAG" | numfmt --to=si)B (base $(podman --storage-driver vfs image inspect --format '{{.Size}}' "$BASE" | numfmt --to=si)B)"
step "image config: $("${B[@]}" inspect --type image --format 'User={{.Docker.Config.User}} Cmd={{.Docker.Config.Cmd}} ExposedPorts={{.Docker.Config.ExposedPorts}} Healthcheck={{.Docker.Config.Healthcheck.Test}}' "$TAG")"

ctr=$("${B[@]}" from "$TAG")
cleanup() {
  pkill -f "run --isolation chroot --env LATENTCAST_PORT=$PORT" 2>/dev/null || true
  sleep 1
  "${B[@]}" rm "$ctr" >/dev/null 2>&1 || true
}
trap cleanup EXIT
mapfile -t cmd < <("${B[@]}" inspect --type image --format '{{range .Docker.Config.Cmd}}{{println .}}{{end}}' "$TAG" | sed '/^$/d')
step "run the image's CMD (${cmd[*]}) on 127.0.0.1:$PORT"
"${B[@]}" run --isolation chroot --env LATENTCAST_PORT="$PORT" "$ctr" -- "${cmd[@]}" >/tmp/latentcast-smoke-server.log 2>&1 &
t0=$(date +%s)
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do
  if (( $(date +%s) - t0 > 180 )); then echo "not ready after 180 s"; tail -20 /tmp/latentcast-smoke-server.log; exit 1; fi
  sleep 1
done
step "ready after $(( $(date +%s) - t0 )) s: $(curl -s "http://127.0.0.1:$PORT/readyz")"
step "healthcheck command inside the container: $("${B[@]}" run --isolation chroot --env LATENTCAST_PORT="$PORT" "$ctr" -- python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$PORT/readyz', timeout=4).status)")"
step "POST /forecast"
body='{"model": "pbcseq", "series": [{"id": "patient-17",
  "timestamps": ["2026-01-03T00:00:00Z", "2026-07-01T00:00:00Z"],
  "values": [[1.2, null, 3.4, 210.0, 55.0, 240.0, 10.1], [1.5, 260.0, null, null, 60.0, 230.0, 10.4]],
  "query_times": ["2027-01-01T00:00:00Z", "2026-04-01T00:00:00Z"]}], "quantiles": [0.1, 0.5, 0.9]}'
resp=$(curl -s -w '\nHTTP %{http_code}' -X POST "http://127.0.0.1:$PORT/forecast" -H 'content-type: application/json' -d "$body")
echo "$resp"
echo "$resp" | tail -n1 | grep -q 'HTTP 200'
pid=$(pgrep -f '/opt/latentcast/bin/python3 /opt/latentcast/bin/latentcast serve' | head -n1)
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
step "server process $pid runs as uid $uid ($(ps -o user= -p "$pid"))"
[ "$uid" != 0 ]
step "smoke test passed"
