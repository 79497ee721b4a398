"""How a checkpoint directory looks on disk, shared by the ranks (which write and verify checkpoints)
and the host (which looks before `--resume`). Stdlib only: the host never imports torch.

    step_00000100/            a committed checkpoint: its files, then manifest.json written last
    .step_00000100.tmp-<pid>/ a save in progress (or one a crash cut short): never loaded
    step_00000100.corrupt/    a checkpoint that failed verification, set aside by resume
"""

from __future__ import annotations

import json
import re
from pathlib import Path

FORMAT = 1
#: written last into a step directory: {"format", "step", "files": {name: {"bytes", "sha256"}}, ...}
MANIFEST = "manifest.json"
CORRUPT_SUFFIX = ".corrupt"
_STEP_DIR = re.compile(r"step_(\d{8,})")


class CheckpointError(Exception):
    """A checkpoint that cannot be used, with the reason."""


def step_dir_name(step: int) -> str:
    """`step_00000100`: zero-padded so names sort by step."""
    return f"step_{step:08d}"


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Committed-looking checkpoint directories, newest step first (not verified)."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))]
    return sorted(found, reverse=True)


def set_aside(ckpt_dir: Path) -> list[Path]:
    """Checkpoints an earlier resume renamed to `<name>.corrupt`, sorted by name."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.endswith(CORRUPT_SUFFIX))


def read_manifest(path: Path) -> dict:
    """The manifest of checkpoint directory `path`; CheckpointError if missing or unreadable."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {MANIFEST} (incomplete: the save did not finish)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable {MANIFEST} ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{path}: {MANIFEST} has an unknown format {manifest.get('format') if isinstance(manifest, dict) else None!r}")
    return manifest


def check_sizes(path: Path) -> dict:
    """Every file the manifest lists is there with its size; the manifest. The cheap half of
    verification (the ranks also compare SHA-256, which reads every byte: too slow for the host)."""
    manifest = read_manifest(path)
    for name, want in manifest["files"].items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{path}: {name} is missing")
        size = f.stat().st_size
        if size != want["bytes"]:
            raise CheckpointError(f"{path}: {name} has {size} bytes, the manifest says {want['bytes']} (truncated)")
    return manifest


def why_broken(error: CheckpointError, path: Path) -> str:
    """The reason of a CheckpointError about `path`, without the path it starts with."""
    text = str(error)
    return text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text


def progress_lost(ckpt_dir: Path) -> list[str] | None:
    """None when a resume has something to continue from, or nothing was ever saved (a run stopped
    before its first checkpoint loses nothing); else one line per checkpoint found, saying why it
    cannot be used: every one is incomplete or broken (by sizes; see check_sizes) or set aside."""
    found, problems = list_checkpoints(ckpt_dir), []
    for _, path in found:
        try:
            check_sizes(path)
            return None
        except CheckpointError as e:
            problems.append(f"{path.name}: {why_broken(e, path)}")
    problems += [f"{p.name}: set aside by an earlier resume (failed verification)" for p in set_aside(ckpt_dir)]
    return problems or None
