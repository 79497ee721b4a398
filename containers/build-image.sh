#!/usr/bin/env bash
# Build the CPU test image localhost/hpcgpu:test with podman, from the same Dockerfile users build
# with docker: Debian base (build-base.sh) + torch CPU and hpcgpu from the wheelhouse
# (build-wheelhouse.sh). Both steps are run here and skip what is already done, so this script
# alone goes from a fresh machine to the image.
#
# Environment:
#   HPCGPU_TEST_IMAGE          tag (default: localhost/hpcgpu:test)
#   HPCGPU_BASE_IMAGE          base (default: localhost/hpcgpu-base:bookworm)
#   HPCGPU_PODMAN_GLOBAL_ARGS  podman global flags (default: --runtime runc --cgroup-manager=cgroupfs)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
image="${HPCGPU_TEST_IMAGE:-localhost/hpcgpu:test}"
base="${HPCGPU_BASE_IMAGE:-localhost/hpcgpu-base:bookworm}"
wheelhouse="$repo/build/wheelhouse"
# crun fails on these machines (setrlimit/cgroups errors); runc with cgroupfs works (ENVIRONMENT.md).
read -r -a podman <<<"podman ${HPCGPU_PODMAN_GLOBAL_ARGS:---runtime runc --cgroup-manager=cgroupfs}"
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"

log() { printf '[build-image] %s\n' "$*" >&2; }

t0=$SECONDS
HPCGPU_BASE_IMAGE="$base" "$here/build-base.sh"
t1=$SECONDS
HPCGPU_WHEELHOUSE="$wheelhouse" "$here/build-wheelhouse.sh"
t2=$SECONDS

# Content hashes for the two install layers (see the Dockerfile): the dependency wheels' names, and
# the hpcgpu wheel's members and CRCs (the zip itself carries timestamps, so its bytes always differ).
deps_id="$(cd "$wheelhouse" && ls ./*.whl requirements.txt | grep -v '^./hpcgpu-' | sha256sum | cut -c1-16)"
hpcgpu_id="$("$python" - "$wheelhouse" <<'EOF'
import glob, hashlib, sys, zipfile
h = hashlib.sha256()
for whl in sorted(glob.glob(f"{sys.argv[1]}/hpcgpu-*.whl")):
    for info in sorted(zipfile.ZipFile(whl).infolist(), key=lambda i: i.filename):
        h.update(f"{info.filename}:{info.CRC}\n".encode())
print(h.hexdigest()[:16])
EOF
)"

log "podman build $image (base $base, deps $deps_id, hpcgpu $hpcgpu_id)"
# --layers: cache each step (default for podman build, stated for clarity). Context = wheelhouse.
"${podman[@]}" build --layers \
  --file "$here/Dockerfile" \
  --build-arg BASE_IMAGE="$base" \
  --build-arg INSTALL_TORCH=1 \
  --build-arg DEPS_ID="$deps_id" \
  --build-arg HPCGPU_ID="$hpcgpu_id" \
  --tag "$image" \
  "$wheelhouse" >&2
t3=$SECONDS
# Dangling layers from earlier builds of the same tag add up quickly (torch is ~700 MB unpacked).
"${podman[@]}" image prune --force >/dev/null 2>&1 || true
size="$("${podman[@]}" image inspect --format '{{.Size}}' "$image")"
log "timings: base $((t1 - t0)) s, wheelhouse $((t2 - t1)) s, image $((t3 - t2)) s;" \
  "$image is $((size / 1000000)) MB"
