#!/usr/bin/env bash
# Install Debian packages for the test tiers: scripts/apt-install.sh [--no-install-recommends] PACKAGE...
#
# `make test` sets the tiers up in parallel (the Slurm cluster, the podman base image, the Docker
# engine), and apt allows one dpkg at a time: each caller waits here for the others (flock) instead
# of failing on apt's own lock. The package lists are refreshed once per boot (the stamp is in
# /run, a tmpfs), not once per caller. Needs root.
set -euo pipefail

recommends=()
if [[ "${1:-}" == --no-install-recommends ]]; then recommends=(--no-install-recommends); shift; fi
(($#)) || { echo "usage: $0 [--no-install-recommends] PACKAGE..." >&2; exit 2; }
for pkg in "$@"; do  # package names only: nothing else reaches apt-get's command line
  [[ "$pkg" =~ ^[a-z0-9][a-z0-9.+-]*$ ]] || { echo "apt-install: not a package name: $pkg" >&2; exit 2; }
done

lock=/run/hpcgpu-apt.lock
stamp=/run/hpcgpu-apt.updated
export DEBIAN_FRONTEND=noninteractive
exec 9>"$lock"
# 15 minutes: another caller may be installing a large package set on a slow mirror
flock --timeout 900 9 || { echo "apt-install: $lock still held after 15 minutes" >&2; exit 1; }
if [[ ! -e "$stamp" ]]; then
  apt-get update -q >/dev/null
  touch "$stamp"
fi
apt-get install -y -q "${recommends[@]}" "$@" >/dev/null
