"""Artefact I/O: atomic writes (temporary file or folder, then rename) and checked safetensors + JSON pairs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON atomically."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; it replaces `path` (old content removed) only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_leftovers(path: str | Path) -> list[Path]:
    """Delete the temporary siblings of `path` (`.<name>.<8 random chars>.tmp`) that a writer killed before its rename
    left behind; return them. Only for a path that no other process is writing at the same time."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.{'?' * 8}.tmp"))
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    return stale


class ArtifactError(ValueError):
    """A saved tensor artefact that is missing, corrupt, or disagrees with its JSON sidecar."""


def content_hash(*chunks: Any, chars: int = 64) -> str:
    """sha256 (hex, first `chars`) of chunks fed in order: bytes as they are, anything else as JSON with sorted keys.
    The one content hash behind every cache key and identity in emis."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk if isinstance(chunk, bytes) else json.dumps(chunk, sort_keys=True, default=str).encode())
    return h.hexdigest()[:chars]


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in chunks (what published checksums are)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes, so a corrupted file is caught even when its header survives."""
    return content_hash(tensor.contiguous().view(torch.uint8).numpy().tobytes())


def save_tensor_artifact(path: str | Path, name: str, tensor: torch.Tensor, meta: dict[str, Any]) -> None:
    """Write `<path>.safetensors` (one tensor called `name`) and `<path>.json` (meta + shape + digest), atomically."""
    path = Path(path)
    tensor = tensor.detach().cpu().contiguous()
    with atomic_file(path.with_name(path.name + ".safetensors"), "wb") as f:
        f.write(save_safetensors({name: tensor}))
    sidecar = {**meta, "tensor": {"name": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype), "sha256": _digest(tensor)}}
    atomic_write_json(path.with_name(path.name + ".json"), sidecar)


def load_tensor_artifact(path: str | Path, name: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read what `save_tensor_artifact` wrote, checking the tensor against its sidecar."""
    path = Path(path)
    st, js = path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")
    for p in (st, js):
        if not p.is_file():
            raise ArtifactError(f"{p} is missing; recompute the artefact")
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
        expected = meta["tensor"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ArtifactError(f"{js} is not a valid sidecar ({err}); delete both files and recompute") from None
    try:
        tensor = load_safetensors(st.read_bytes())[name]
    except (SafetensorError, KeyError) as err:
        raise ArtifactError(f"{st} is corrupt or truncated ({err}); delete it and recompute") from None
    if list(tensor.shape) != expected["shape"] or str(tensor.dtype) != expected["dtype"]:
        raise ArtifactError(
            f"{st} holds {list(tensor.shape)} {tensor.dtype} but {js.name} says {expected['shape']} {expected['dtype']}"
        )
    if _digest(tensor) != expected["sha256"]:
        raise ArtifactError(f"{st} does not match the checksum in {js.name}; delete both files and recompute")
    return tensor, meta


def _encode_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able skeleton of nested containers; tensors moved into `tensors` and referenced by name."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"tensor": name}
    if isinstance(obj, dict):
        return {"dict": [[_encode_state(k, tensors), _encode_state(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"tuple" if isinstance(obj, tuple) else "list": [_encode_state(v, tensors) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"cannot store a {type(obj).__name__} in a state file (only tensors, containers and scalars)")


def _decode_state(node: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Any:
    (kind, value), = node.items()
    if kind == "tensor":
        return tensors[value]
    if kind == "dict":
        return {_decode_state(k, tensors): _decode_state(v, tensors) for k, v in value}
    if kind in ("list", "tuple"):
        items = [_decode_state(v, tensors) for v in value]
        return tuple(items) if kind == "tuple" else items
    return value


def save_state(path: str | Path, state: Any) -> None:
    """Nested state (e.g. optimizer and scheduler state dicts) as `<path>.safetensors` + `<path>.json`: no pickle."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode_state(state, tensors)
    with atomic_file(path.with_name(path.name + ".safetensors"), "wb") as f:
        f.write(save_safetensors(tensors))
    atomic_write_json(path.with_name(path.name + ".json"), skeleton)


def load_state(path: str | Path) -> Any:
    """What `save_state` wrote, rebuilt with the same container types and dict key types."""
    path = Path(path)
    try:
        tensors = load_safetensors(path.with_name(path.name + ".safetensors").read_bytes())
        skeleton = json.loads(path.with_name(path.name + ".json").read_text())
        return _decode_state(skeleton, tensors)
    except (OSError, json.JSONDecodeError, SafetensorError, KeyError, ValueError) as err:
        raise ArtifactError(f"{path}: unreadable state ({err}); delete it to start over") from None


def save_figure(fig: Any, path: str | Path) -> None:
    """A matplotlib figure as a PNG, written atomically."""
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
