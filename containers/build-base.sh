#!/usr/bin/env bash
# Build the Debian 12 base image for the CPU test image: localhost/hpcgpu-base:bookworm.
#
# No container registry is reachable on the development and CI machines, so the base cannot be
# pulled: debootstrap makes a minimal root filesystem from Debian's own packages and podman imports
# it. Debian 12's python3 is 3.11, the same as the host, so the host-built wheelhouse fits.
#
# Skips everything when the image already exists. The root filesystem tarball and the downloaded
# .debs are cached under $HPCGPU_CACHE (default build/cache), so a re-import after `podman rmi`
# takes seconds. Environment:
#   HPCGPU_CACHE         cache directory (default: build/cache under the repository)
#   HPCGPU_PODMAN_GLOBAL_ARGS  podman global flags (default: --runtime runc --cgroup-manager=cgroupfs)
#   DEBIAN_MIRROR        Debian mirror (default: http://deb.debian.org/debian)
#   HPCGPU_BASE_IMAGE    image name (default: localhost/hpcgpu-base:bookworm)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$(realpath -m "${HPCGPU_CACHE:-$repo/build/cache}")"
image="${HPCGPU_BASE_IMAGE:-localhost/hpcgpu-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# crun fails on these machines (setrlimit/cgroups errors); runc with cgroupfs works (ENVIRONMENT.md).
read -r -a podman_args <<<"${HPCGPU_PODMAN_GLOBAL_ARGS:---runtime runc --cgroup-manager=cgroupfs}"
# tini: a real PID 1 so SIGTERM/SIGUSR1 from docker stop / Slurm reach the node agent and its ranks.
packages="python3,python3-venv,python3-pip,ca-certificates,tini"
tarball="$cache/hpcgpu-base-bookworm.tar"

log() { printf '[build-base] %s\n' "$*" >&2; }

# CI starts from a fresh machine: install the tools when they are missing.
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  "$repo/scripts/apt-install.sh" "${need[@]}"
fi

if podman "${podman_args[@]}" image exists "$image"; then
  log "$image exists; nothing to do"
  exit 0
fi

start=$SECONDS
if [[ ! -s "$tarball" ]]; then
  rootfs="$cache/rootfs-bookworm.tmp"
  rm -rf "$rootfs"
  mkdir -p "$cache/debs"
  log "debootstrap bookworm ($packages) from $mirror"
  # --cache-dir keeps the .debs, so a rebuild after a cache wipe of the tarball downloads nothing.
  debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
    bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
  # Trim what an image never needs: apt lists and caches, docs, man pages (about 60 MB).
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
  # Written atomically so an interrupted run never leaves a truncated tarball behind.
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
  log "root filesystem ready in $((SECONDS - start)) s"
fi

log "importing $tarball as $image"
podman "${podman_args[@]}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --quiet "$tarball" "$image" >/dev/null
log "$image built in $((SECONDS - start)) s"
