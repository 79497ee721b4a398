"""Read a W&B transaction log (`run-<id>.wandb`) without W&B's own reader (recent wandb releases keep
it in their Go core): a 7-byte header (`:W&B`, magic 0xBEE1, version 0), then LevelDB's log format,
32 KiB blocks of records `crc32 (4) | length (2, LE) | type (1) | data`, a record split across blocks
as FIRST, MIDDLE..., LAST. Each whole record is a wandb_internal_pb2.Record."""

from __future__ import annotations

import struct
from pathlib import Path

HEADER = b":W&B\xe1\xbe\x00"
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data.startswith(HEADER), f"{path} is not a W&B transaction log"
    out, pos, pending = [], len(HEADER), b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # the block's tail is zero padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # zeros: the rest of this block is padding (or the preallocated end)
            pos += left_in_block
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
    return out


def history(path: Path) -> list[dict[str, str]]:
    """Each history record's items, {key: value as JSON text}."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): i.value_json for i in record.history.item})
    return rows
