"""What a checkpoint needs besides the model: RNG states, CPU snapshots, the spec's fingerprint.

Everything is kept as tensors and plain values so `torch.load(weights_only=True)` can read it.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict:
    """This process's RNG states: python, numpy, torch CPU and every CUDA device."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def snapshot(obj: Any, copy: bool = True, reuse: Any = None) -> Any:
    """The same nested structure with every tensor on the CPU; copy=True clones (async saves).

    reuse: an earlier snapshot of the same structure that nothing reads any more: its tensors of the
    same shape and dtype are overwritten in place instead of allocated again, so an async save's stall
    is a plain copy, without first touching every page of fresh memory (a third of the stall)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if not copy:
            return t.cpu()
        if (isinstance(reuse, torch.Tensor) and reuse.device.type == "cpu" and reuse.shape == t.shape
                and reuse.dtype == t.dtype and reuse.is_contiguous() and t.layout == torch.strided):
            return reuse.copy_(t)
        return t.to("cpu", copy=True)
    if isinstance(obj, dict):
        old = reuse if isinstance(reuse, dict) else {}
        return {k: snapshot(v, copy, old.get(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        old = reuse if isinstance(reuse, (list, tuple)) and len(reuse) == len(obj) else [None] * len(obj)
        items = [snapshot(v, copy, r) for v, r in zip(obj, old)]
        return items if isinstance(obj, list) else tuple(items)
    return obj


def spec_fingerprint(spec_data: dict) -> tuple[str, str]:
    """(short hash, canonical JSON) of a spec's model_dump(mode='json')."""
    text = json.dumps(spec_data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16], text


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def spec_changes(old_json: str, new_json: str) -> list[str]:
    """Keys whose value differs between two canonical spec JSONs, as 'key: old -> new'."""
    old, new = _flatten(json.loads(old_json)), _flatten(json.loads(new_json))
    keys = sorted(old.keys() | new.keys())
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
