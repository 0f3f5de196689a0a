"""Read back what an offline W&B run wrote, with wandb's own record schema.

wandb >= 0.20 writes ``run-<id>.wandb`` from its Go core and ships no Python reader, so the
container format (the LevelDB log format behind a 7-byte W&B header: 32 KiB blocks of
``crc32 | length | type`` framed chunks) is unframed here and every record is decoded with
wandb's protobuf ``Record`` message.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

W_AND_B_HEADER = 7  # ":W&B" + magic (2 bytes) + version (1 byte)
BLOCK = 32 * 1024
CHUNK_HEADER = 7  # crc32 (4) + length (2) + type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    """All records of a ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    out, pending, offset = [], b"", W_AND_B_HEADER
    while offset + CHUNK_HEADER <= len(data):
        room = BLOCK - offset % BLOCK
        if room < CHUNK_HEADER:  # block trailer padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + CHUNK_HEADER])
        chunk = data[offset + CHUNK_HEADER:offset + CHUNK_HEADER + length]
        offset += CHUNK_HEADER + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            offset += BLOCK - offset % BLOCK if offset % BLOCK else 0
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """``{"run": RunRecord, "config": {...}, "summary": {...}, "artifacts": [(name, type, files)]}``.

    Summary is folded from the summary updates in order (the last value of a key wins).
    """
    (log_file,) = Path(run_dir).glob("run-*.wandb")
    result: dict[str, Any] = {"run": None, "config": {}, "summary": {}, "artifacts": []}
    for record in records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            result["run"] = record.run
            for item in record.run.config.update:
                result["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                result["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or ".".join(item.nested_key)
                result["summary"][key] = json.loads(item.value_json)
        elif kind == "artifact":
            files = [entry.path for entry in record.artifact.manifest.contents]
            result["artifacts"].append((record.artifact.name, record.artifact.type, files))
    return result
