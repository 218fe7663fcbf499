"""Artefact I/O: atomic writes (temporary file or folder, then rename), checked safetensors + JSON pairs, and what
every cache shares: per-entry locks and the fingerprint of the code that produced an entry."""

from __future__ import annotations

import ast
import errno
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

log = logging.getLogger(__name__)


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
    """Yield a temporary sibling folder; it replaces `path` (old content removed) only on success.
    Safe when several processes finish the same folder at once: each swap is whole, the last one stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename folder `tmp` to `path`, first moving any folder there aside (and deleting it); another process's
    folder appearing or vanishing meanwhile is retried, never an error."""
    while True:
        try:
            os.replace(tmp, path)  # succeeds when `path` is absent (or an empty folder)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        try:
            os.replace(path, old)
        except FileNotFoundError:  # another process moved it first
            old.rmdir()
            continue
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def entry_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock of one cache entry (`.<name>.lock` beside `path`): a second process computing the same entry
    waits here, then finds the first one's result instead of computing it again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another process is computing it; waiting", path)
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def remove_leftovers(path: str | Path) -> list[Path]:
    """Delete the temporary siblings of `path` (`.<name>.<8 random chars>.tmp`, or `.old` from a swap) that a writer
    killed before its rename left behind; return them. Only for a path no other process is writing (hold its lock)."""
    path = Path(path)
    stale = sorted(p for suffix in ("tmp", "old") for p in path.parent.glob(f".{path.name}.{'?' * 8}.{suffix}"))
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


def same_code(what: str, stored: str | None, current: str) -> bool:
    """Whether a cached artefact was produced by the current code (its stored fingerprint is `current`); when not,
    one log line says it is recomputed and why. A missing fingerprint (older emis) counts as other code."""
    if stored == current:
        return True
    log.info("%s: recomputing: produced by other code (fingerprint %s, now %s)", what,
             f"{stored[:12]}..." if stored else "none", f"{current[:12]}...")
    return False


def code_fingerprint(*names: str) -> str:
    """Content hash of the named modules' code (a package: every module and YAML data file under it), blind to
    comments, docstrings and formatting: what a cache stores to tell artefacts of other code from current ones."""
    parts = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise ModuleNotFoundError(f"no module named {name!r} to fingerprint")
        if spec.submodule_search_locations:
            for folder in map(Path, spec.submodule_search_locations):
                parts += [[name, str(f.relative_to(folder)), _file_digest(f)]
                          for f in sorted(folder.rglob("*")) if f.suffix in (".py", ".yaml")]
        else:
            parts.append([name, _file_digest(Path(spec.origin))])
    return content_hash(parts)


def _file_digest(path: Path) -> str:
    """`_meaning_digest` of one file (its text read each time; parsed only when the text is new)."""
    return _meaning_digest(path.suffix, path.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=512)
def _meaning_digest(suffix: str, text: str) -> str:
    """Hash of what a file means: Python as its syntax tree without docstrings, YAML as its parsed data."""
    if suffix == ".yaml":
        return content_hash(yaml.safe_load(text))
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return content_hash(ast.dump(tree))


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
