#!/usr/bin/env bash
# Build build/wheelhouse: the hpcgpu wheel plus every dependency as a wheel, so images install
# with `pip install --no-index` (pip inside a container cannot reach an index here, and HPC
# compute nodes often cannot either).
#
# Layout of the wheelhouse:
#   hpcgpu-*.whl          always rebuilt (it is the code under test)
#   requirements.txt      hpcgpu's dependencies from pyproject.toml WITHOUT torch: a CUDA base
#                         image keeps its own torch, so torch is installed only on request
#   *.whl                 the dependencies (+ torch when HPCGPU_TORCH is not "none")
#   .stamp-*              records which dependency sets are complete, so reruns skip pip entirely
#
# Environment:
#   HPCGPU_TORCH          torch requirement to add (default: torch==2.13.0, the CPU build the host's
#                         pip configuration finds); "none" for CUDA base images that bring torch
#   HPCGPU_WHEEL_PYTHON   target Python X.Y (default: this python's). Another version downloads
#                         binary wheels for it (e.g. 3.12 for an NGC base image).
#   HPCGPU_WHEELHOUSE     output directory (default: build/wheelhouse)
#   PYTHON                python with pip (default: .venv/bin/python, else python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "${HPCGPU_WHEELHOUSE:-$repo/build/wheelhouse}")"
python="${PYTHON:-$repo/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
torch_req="${HPCGPU_TORCH:-torch==2.13.0}"
host_py="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
target_py="${HPCGPU_WHEEL_PYTHON:-$host_py}"

log() { printf '[build-wheelhouse] %s\n' "$*" >&2; }
pip() { "$python" -m pip --disable-pip-version-check "$@"; }

start=$SECONDS
mkdir -p "$out"

# 1. hpcgpu itself: pure Python, rebuilt every time; --no-deps so pip never resolves torch here.
rm -f "$out"/hpcgpu-*.whl
pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$out" "$repo" >&2 2>/dev/null ||
  pip wheel --quiet --no-deps --wheel-dir "$out" "$repo" >&2
log "hpcgpu wheel built ($((SECONDS - start)) s)"

# 2. The dependency list, minus torch, straight from pyproject.toml (one source of truth).
"$python" - "$repo/pyproject.toml" >"$out/requirements.txt.tmp" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0].lower() != "torch"))
EOF
mv "$out/requirements.txt.tmp" "$out/requirements.txt"

reqs=(-r "$out/requirements.txt")
[[ "$torch_req" == none ]] || reqs+=("$torch_req")
stamp="$out/.stamp-py$target_py-$(cat "$out/requirements.txt" <(echo "$torch_req") | sha256sum | cut -c1-16)"
if [[ -e "$stamp" ]]; then
  log "dependencies for python $target_py already present ($(basename "$stamp")); skipping pip"
  exit 0
fi

# 3. Guard: an unpinned or too-wide torch pulls several GB of CUDA wheels (ENVIRONMENT.md). Resolve
#    torch alone first and refuse anything but a +cpu build unless explicitly allowed.
if [[ "$torch_req" != none && "${HPCGPU_ALLOW_CUDA_TORCH:-0}" != 1 ]]; then
  pip download --quiet --no-deps --only-binary=:all: --dest "$out" --find-links "$out" "$torch_req" >&2
  ls "$out"/torch-*+cpu-*.whl >/dev/null 2>&1 || {
    log "error: '$torch_req' did not resolve to a +cpu wheel; set HPCGPU_ALLOW_CUDA_TORCH=1 to allow CUDA torch"
    exit 1
  }
fi

# 4. Everything else. --find-links "$out" reuses wheels already there instead of downloading again.
cross=()
if [[ "$target_py" != "$host_py" ]]; then
  # Binary wheels for another interpreter: pip cannot build sdists for a Python it is not running.
  cross=(--python-version "$target_py" --implementation cp --only-binary=:all:
         --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform linux_x86_64)
fi
log "collecting dependencies for python $target_py: ${reqs[*]}"
pip download --quiet --dest "$out" --find-links "$out" "${cross[@]}" "${reqs[@]}" >&2
# pip download keeps sdists as they are; turn any into wheels so the image needs no compiler.
shopt -s nullglob
sdists=("$out"/*.tar.gz "$out"/*.zip)
if ((${#sdists[@]})); then
  pip wheel --quiet --no-deps --wheel-dir "$out" "${sdists[@]}" >&2
  rm -f "${sdists[@]}"
fi
touch "$stamp"
log "wheelhouse ready: $out ($(du -sh "$out" | cut -f1), $((SECONDS - start)) s)"
