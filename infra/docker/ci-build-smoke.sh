#!/usr/bin/env bash
# CI: builds the gpu-worker CPU image for real and smoke-tests it (docs/deploy.md, "Building where no
# base image can be pulled"), on a machine that cannot pull images nor start containers:
#
#   1. the prepared $NEST_HOME (`node bin/nestlm.mjs setup`, the same call `npm test` makes; cached)
#   2. podman and debootstrap from the Debian packages when missing
#   3. capability probes: root (or passwordless sudo), mount, unshare, chroot. A sandbox that refuses
#      one prints `image build skipped: <reason>` and exits 0 — the only way this script passes
#      without building. Everything after the probes fails the run when it fails.
#   4. debootstrap --variant=minbase bookworm → podman import → podman build (CPU image) →
#      infra/docker/smoke.sh on it; each step's wall time is printed.
#
# It tags its own images (localhost/nest-ci-debian-base:bookworm, localhost/nest-gpu-worker:ci-cpu),
# builds the rootfs in a fresh temporary folder, and on exit unmounts what it mounted, removes the
# rootfs and its tags (NEST_CI_KEEP_IMAGES=1 keeps them) and, when podman held no image before it
# ran (a fresh CI machine), prunes the build's intermediate images too.
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), NEST_HOME (default ~/.cache/nest).
set -euo pipefail
cd "$(dirname "$0")/../.."

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BASE_IMAGE=localhost/nest-ci-debian-base:$SUITE
IMAGE=localhost/nest-gpu-worker:ci-cpu
export NEST_HOME=${NEST_HOME:-$HOME/.cache/nest}

T0=$(date +%s)
OUTCOME=""
skip() {
  echo "image build skipped: $*"
  OUTCOME=skipped
  exit 0
}
step() { # name command…: runs it, prints its wall time
  local name=$1 t rc=0
  shift
  t=$(date +%s)
  echo "-- $name"
  "$@" || rc=$?
  echo "-- $name: $([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)") in $(($(date +%s) - t)) s"
  return "$rc"
}

# ---- 1. model and corpora (as the invoking user, before any re-exec as root)
if [ -z "${NEST_CI_AS_ROOT:-}" ]; then
  step "nestlm setup (model and corpora into $NEST_HOME)" node bin/nestlm.mjs setup
fi

# ---- root: the build and the smoke test mount filesystems
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || skip "not root and no passwordless sudo"
  exec sudo -n env "PATH=$PATH" "HOME=$HOME" "NEST_HOME=$NEST_HOME" NEST_CI_AS_ROOT=1 \
    "DEBIAN_MIRROR=$MIRROR" "NEST_CI_KEEP_IMAGES=${NEST_CI_KEEP_IMAGES:-}" "$0" "$@"
fi

# ---- 2. tools
missing=()
for tool in podman debootstrap curl openssl; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
  step "apt-get install ${missing[*]}" bash -c \
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing[*]} >/dev/null"
fi
podman --version
command -v redis-cli >/dev/null 2>&1 || { echo "redis-cli is needed by the smoke test (.ci/run's redis step installs it)" >&2; exit 1; }

# ---- 3. capability probes (the only checks that may skip)
WORK=$(mktemp -d /var/tmp/nest-ci-image.XXXXXX)
ROOTFS="$WORK/rootfs"
IMAGES_BEFORE=$(podman images -q | wc -l)
cleanup() {
  local rc=$?
  set +e
  podman image unmount "$IMAGE" >/dev/null 2>&1
  # Mounts left under the work folder (a debootstrap or smoke test that stopped half-way), deepest first.
  findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  rm -rf "$WORK"
  if [ "${NEST_CI_KEEP_IMAGES:-}" != 1 ]; then
    podman rmi -f "$IMAGE" "$BASE_IMAGE" >/dev/null 2>&1
    [ "$IMAGES_BEFORE" -eq 0 ] && podman image prune -af >/dev/null 2>&1
  fi
  echo "ci-build-smoke: ${OUTCOME:-$([ "$rc" -eq 0 ] && echo passed || echo FAILED)} in $(($(date +%s) - T0)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir "$WORK/probe"
mount -t tmpfs -o size=1m tmpfs "$WORK/probe" 2>"$WORK/probe.err" || skip "mount refused ($(head -c 200 "$WORK/probe.err"))"
umount "$WORK/probe"
unshare --mount --uts --ipc --pid --fork true 2>"$WORK/probe.err" || skip "unshare refused ($(head -c 200 "$WORK/probe.err"))"
chroot / /bin/true 2>"$WORK/probe.err" || skip "chroot refused ($(head -c 200 "$WORK/probe.err"))"

# ---- 4. base, image, smoke
step "debootstrap --variant=minbase $SUITE ($MIRROR)" bash -c \
  "debootstrap --variant=minbase '$SUITE' '$ROOTFS' '$MIRROR' >'$WORK/debootstrap.log' 2>&1 || { tail -n 30 '$WORK/debootstrap.log' >&2; exit 1; }"
step "podman import → $BASE_IMAGE" bash -c "tar -C '$ROOTFS' -c . | podman import --quiet - '$BASE_IMAGE' >/dev/null"
rm -rf "$ROOTFS"
CA=/etc/ssl/certs/ca-certificates.crt
secret=()
[ -f "$CA" ] && secret=(--secret "id=extra_ca,src=$CA")
step "podman build $IMAGE" podman build --isolation chroot --format docker "${secret[@]}" \
  --build-arg "BASE=$BASE_IMAGE" --build-arg "BUILD_BASE=$BASE_IMAGE" \
  -f infra/docker/Dockerfile -t "$IMAGE" .
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"
step "infra/docker/smoke.sh $IMAGE" infra/docker/smoke.sh "$IMAGE"
