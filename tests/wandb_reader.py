"""Read an offline W&B run back from its `run-<id>.wandb` file, for tests.

wandb 0.31 keeps no Python reader of that file (wandb-core, in Go, writes and syncs it), so this parses its
LevelDB-style log here and decodes each record with W&B's own protobuf, `wandb.proto.wandb_internal_pb2.Record`:
a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each
[crc32 (seeded with the chunk type), length, type: full | first | middle | last] + payload.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def offline_runs(out_dir: str | Path) -> list[Path]:
    """The offline run folders under a job's output dir (`<out>/wandb/offline-run-*`), oldest first."""
    return sorted((Path(out_dir) / "wandb").glob("offline-run-*"))


def run_file(run_dir: str | Path) -> Path:
    """The `run-<id>.wandb` file of a run folder (or the file itself)."""
    run_dir = Path(run_dir)
    if run_dir.suffix == ".wandb":
        return run_dir
    files = list(run_dir.glob("run-*.wandb"))
    if len(files) != 1:
        raise FileNotFoundError(f"{run_dir}: expected one run-*.wandb file, found {len(files)}")
    return files[0]


def read_records(path: str | Path) -> list[pb.Record]:
    """Every record of a .wandb file, in order; raises ValueError on a bad header, checksum or truncation."""
    data = Path(path).read_bytes()
    ident, magic, version = HEADER.unpack_from(data)
    if (ident, magic, version) != (b":W&B", 0xBEE1, 0):
        raise ValueError(f"{path}: not a version-0 W&B log ({ident!r}, {magic:#x}, {version})")
    records, pending, pos = [], b"", HEADER.size
    while pos < len(data):
        if BLOCK - pos % BLOCK < CHUNK.size:  # block trailer padding
            pos += BLOCK - pos % BLOCK
            continue
        if pos + CHUNK.size > len(data):
            raise ValueError(f"{path}: truncated chunk header at byte {pos}")
        crc, length, kind = CHUNK.unpack_from(data, pos)
        payload = data[pos + CHUNK.size:pos + CHUNK.size + length]
        if len(payload) != length or zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: corrupt or truncated chunk at byte {pos}")
        pos += CHUNK.size + length
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _path(item: Any) -> list[str]:
    return list(item.nested_key) or [item.key]


def _set(tree: dict, path: list[str], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _remove(tree: dict, path: list[str]) -> None:
    for key in path[:-1]:
        tree = tree.get(key, {})
    tree.pop(path[-1], None)


def _apply(tree: dict, record: pb.ConfigRecord | pb.SummaryRecord) -> None:
    """Apply a config or summary record's updates and removals."""
    for item in record.update:
        _set(tree, _path(item), json.loads(item.value_json))
    for item in record.remove:
        _remove(tree, _path(item))


def _history_value(item: pb.HistoryItem) -> Any:
    kind = item.WhichOneof("value")
    if kind is None:
        return json.loads(item.value_json)
    if kind == "none":
        return None
    return json.loads(item.json) if kind == "json" else getattr(item, kind)


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """An offline run as logged: {id, project, entity, name, group, job_type, tags, config (without `_wandb`),
    summary (final values, nested by W&B key path; `a/b` keys stay flat strings), history (one dict per logged step),
    exit_code (None when the run was never finished)}."""
    run: pb.RunRecord | None = None
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    exit_code = None
    for record in read_records(run_file(run_dir)):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            _apply(config, record.run.config)
        elif kind == "config":
            _apply(config, record.config)
        elif kind == "summary":
            _apply(summary, record.summary)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set(row, _path(item), _history_value(item))
            history.append(row)
        elif kind == "exit":
            exit_code = record.exit.exit_code
    if run is None:
        raise ValueError(f"{run_dir}: no run record")
    config.pop("_wandb", None)
    return {
        "id": run.run_id, "project": run.project, "entity": run.entity, "name": run.display_name,
        "group": run.run_group, "job_type": run.job_type, "tags": list(run.tags),
        "config": config, "summary": summary, "history": history, "exit_code": exit_code,
    }
