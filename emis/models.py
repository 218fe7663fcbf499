"""Load a model through nnsight with uniform access to its decoder layers, locally, on NDIF, or NDIF simulated."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import urlparse

import nnsight
import torch
from nnsight import TransformersModel
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

import emis
from emis.io import content_hash
from emis.settings import REMOTES, TOKENIZER_LOADERS

log = logging.getLogger(__name__)

# Sub-modules of multimodal checkpoints (e.g. Ministral 3) outside the language model: LoRA and the layer search skip them.
NON_TEXT = ("vision_tower", "vision_model", "multi_modal_projector", "visual")
# model_type -> path (from the causal-LM module, the same through the nnsight wrapper) of the decoder-layer list,
# named where it is not left to the search: the study's vision-language model, whose vision tower has layers too.
LAYER_PATHS: dict[str, str] = {"mistral3": "model.language_model.layers"}
# Vision-language checkpoints that transformers has no causal-LM class for: loaded with their image-text-to-text
# class and run on text alone, so they must be loaded here (NDIF needs a hub id it hosts, not a module).
IMAGE_TEXT_MODEL_TYPES = ("mistral3",)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
NDIF_CONNECT_TIMEOUT_S = 10.0  # a reachable NDIF answers a TCP connect in well under a second


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load: hub id or local directory, optional LoRA adapter, and where it runs."""

    name: str
    adapter: str | None = None
    revision: str | None = None  # of `name` on the hub (branch, tag or commit); pinned commits make the cache keys exact
    adapter_revision: str | None = None  # of a hub `adapter` (fetched into the hub cache at that revision)
    remote: bool | str = False  # False: here; True: NDIF; "local": serialised like NDIF, run here
    dtype: str = "float32"
    device: str = "cpu"
    tokenizer: str = "auto"  # auto: AutoTokenizer (hub models) | saved: exactly the saved tokenizer.json (the organisms)
    traces_per_session: int = 8  # remote: how many batches' traces one request (an nnsight session) carries

    def to_dict(self) -> dict[str, Any]:
        """What identifies the model in caches and sidecars (how traces are grouped into requests does not)."""
        return {k: v for k, v in asdict(self).items() if k != "traces_per_session"}


@dataclass
class LoadedModel:
    """An nnsight model with its tokenizer, decoder-layer envoys, sizes, spec and a weights identity."""

    lm: TransformersModel
    tokenizer: PreTrainedTokenizerBase
    layers: list[Any]
    n_layers: int
    d_model: int
    spec: ModelSpec
    weights_id: str

    @property
    def identity(self) -> list[Any]:
        """What names this model in every cache key: its spec and weights identity (the one place a model revision
        joins the keys: add it here, or to `ModelSpec.to_dict`, once the config has one)."""
        return [self.spec.to_dict(), self.weights_id]


def residual(layer_output: Any) -> Any:
    """The residual stream of a decoder layer's output: the tensor itself or the first element of a tuple."""
    return layer_output[0] if isinstance(layer_output, tuple) else layer_output


Batch = TypeVar("Batch")


def traced_batches(model: LoadedModel, batches: Sequence[Batch], run: Callable[[LoadedModel, Batch], Any],
                   desc: str, progress: bool = True) -> list[Any]:
    """`run(model, batch)` for every batch, where `run` opens one trace (or generate) and returns what it read.

    Locally each trace runs as it is opened. Remotely (NDIF, or "local" simulation) the traces of
    `traces_per_session` batches go as one request: an nnsight session, so a sweep is not one round trip per batch."""
    if not model.spec.remote:
        return [run(model, b) for b in tqdm(batches, desc=desc, unit="batch", disable=not progress)]
    n = model.spec.traces_per_session
    out: list[Any] = []
    for start in tqdm(range(0, len(batches), n), desc=f"{desc} (remote sessions)", unit="session", disable=not progress):
        group = batches[start : start + n]
        with model.lm.session(remote=model.spec.remote):
            results = nnsight.save([])
            for batch in group:
                results.append(run(model, batch))
        out.extend(results)
    return out


def _check_spec(spec: ModelSpec) -> None:
    """Fail early, in one line, on a spec that cannot load."""
    if spec.tokenizer not in TOKENIZER_LOADERS:
        raise ValueError(f"ModelSpec.tokenizer must be one of {sorted(TOKENIZER_LOADERS)}, got {spec.tokenizer!r}")
    if spec.remote not in REMOTES:
        raise ValueError(f"ModelSpec.remote must be False, True or 'local', got {spec.remote!r}")
    if spec.traces_per_session < 1:
        raise ValueError(f"ModelSpec.traces_per_session must be at least 1, got {spec.traces_per_session}")
    if not isinstance(getattr(torch, spec.dtype, None), torch.dtype):
        raise ValueError(f"ModelSpec.dtype {spec.dtype!r} is not a torch dtype name (e.g. 'float32', 'bfloat16')")
    for what, name in (("model", spec.name), ("adapter", spec.adapter)):
        if name is None or Path(name).expanduser().is_dir():
            continue
        if name.startswith((".", "/", "~")) or not HUB_ID.match(name):
            make = ("train it with experiments/finetune.py (the model config's comment has the command)" if what == "adapter"
                    else "build the organisms with experiments/build_organisms.py")
            raise FileNotFoundError(f"{what} {name!r} is neither a local directory nor a hub id — {make}, "
                                    "or give a hub id like 'Qwen/Qwen2.5-1.5B-Instruct'")
    if spec.remote is True:
        if Path(spec.name).expanduser().is_dir():
            raise ValueError(f"remote=True runs on NDIF, which cannot see the local directory {spec.name!r}")
        if not os.environ.get("NDIF_API_KEY"):
            raise ValueError("remote=True needs an NDIF API key in the environment variable NDIF_API_KEY (export NDIF_API_KEY=...)")


def ndif_reachable(host: str, timeout: float) -> None:
    """Fail fast, in one line, when the NDIF host does not accept a connection within `timeout` seconds."""
    url = urlparse(host if "://" in host else f"https://{host}")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(
            f"NDIF at {host} cannot be reached ({err.__class__.__name__}: {err}); check the network and NDIF's status, "
            "or run here with model.remote=false (or model.remote=local)"
        ) from None


def _files_identity(name: str) -> str | None:
    """Size and mtime of every weight file of a local directory; None for a hub id."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return None
    stamps = {
        p.name: (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.iterdir())
        if p.name.endswith(WEIGHT_SUFFIXES)
    }
    return json.dumps({"path": str(folder.resolve()), "files": stamps}, sort_keys=True)


def weights_identity(spec: ModelSpec, config: Any) -> str:
    """A hash that changes when the weights behind `spec` change (local files' stamps, or the hub commit)."""
    parts = [
        _files_identity(spec.name) or f"{spec.name}@{getattr(config, '_commit_hash', None)}",
        _files_identity(spec.adapter) if spec.adapter else None,
        config.to_json_string(use_diff=False),
    ]
    return content_hash(parts)


def _resolve(root: Any, path: str) -> Any:
    """Follow a dotted attribute path from `root`."""
    for attr in path.split("."):
        root = getattr(root, attr)
    return root


def decoder_layers(model: torch.nn.Module, name: str) -> tuple[str, torch.nn.ModuleList]:
    """The language model's decoder-layer list and its path from `model` (weights or meta): the ModuleList of the
    text config's `num_hidden_layers` blocks at the path LAYER_PATHS names, else the one outside NON_TEXT holding the
    most parameters (a list nested inside the layers loses), so any causal LM works whatever its attribute names."""
    config = model.config
    n_layers = int(config.get_text_config().num_hidden_layers)
    named = LAYER_PATHS.get(config.model_type)
    where = f"at {named}" if named else f"outside {'/'.join(NON_TEXT)}"
    candidates = [(named, model.get_submodule(named))] if named else [
        (path, m) for path, m in model.named_modules() if not any(part in path for part in NON_TEXT)]
    found = [(path, m) for path, m in candidates if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers]
    if not found:
        raise ValueError(f"{name} ({config.model_type}): no decoder layers found — looked for a torch.nn.ModuleList of "
                         f"num_hidden_layers={n_layers} modules {where}")
    return max(found, key=lambda item: sum(p.numel() for p in item[1].parameters()))


def layer_envoys(lm: TransformersModel, name: str) -> list[Any]:
    """The nnsight envoys of `lm`'s decoder layers, in order: the list `decoder_layers` finds in its module."""
    return list(_resolve(lm, decoder_layers(lm._module, name)[0]))


def _left_padded(tok: PreTrainedTokenizerBase, name: str) -> PreTrainedTokenizerBase:
    """`tok` padding on the left with a pad token (eos when it has none), saying so in one line when it did not."""
    changed = []
    if tok.padding_side != "left":
        changed.append(f"padding side {tok.padding_side} -> left")
        tok.padding_side = "left"
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"{name}: the tokenizer has neither a pad nor an eos token; batched captures need one")
        tok.pad_token = tok.eos_token
        changed.append(f"no pad token -> eos {tok.eos_token!r}")
    if changed:
        log.info("%s: tokenizer set to %s (batched captures and steering read each row's last token)", name,
                 ", ".join(changed))
    return tok


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """The tokenizer of `spec` as `load_model` gives it: `spec.tokenizer`'s loader, left padding, a pad token."""
    _check_spec(spec)
    if spec.tokenizer == "saved":
        # transformers 5 maps some model types to their own tokenizer class (qwen2 -> Qwen2Tokenizer), whose
        # pre-tokenizer differs from the one a locally trained tokenizer.json was trained with.
        return _left_padded(PreTrainedTokenizerFast.from_pretrained(spec.name, revision=spec.revision), spec.name)
    return _left_padded(AutoTokenizer.from_pretrained(spec.name, revision=spec.revision), spec.name)


def adapter_path(spec: ModelSpec) -> str | None:
    """The adapter to attach: as given, or for a pinned hub adapter its snapshot at `adapter_revision`."""
    if spec.adapter is None or spec.adapter_revision is None or Path(spec.adapter).expanduser().is_dir():
        return spec.adapter
    from huggingface_hub import snapshot_download

    return snapshot_download(spec.adapter, revision=spec.adapter_revision)


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load `spec` as an nnsight TransformersModel (weights here unless remote=True) with its decoder layers."""
    _check_spec(spec)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, spec.dtype)}
    if spec.remote:
        nnsight.register(emis)  # emis code called inside traces ships by value: the server has no emis installed
    if spec.remote is True:
        ndif_reachable(nnsight.CONFIG.API.HOST, NDIF_CONNECT_TIMEOUT_S)
        nnsight.CONFIG.API.APIKEY = os.environ["NDIF_API_KEY"]
    else:
        kwargs.update(dispatch=True, device_map=spec.device)
    kwargs["tokenizer"] = load_tokenizer(spec)
    lm = _image_text_model(spec, kwargs) or TransformersModel(spec.name, task="text-generation", peft=adapter_path(spec),
                                                              revision=spec.revision, **kwargs)
    config = lm.config
    text = config.get_text_config()
    layers = layer_envoys(lm, spec.name)
    log.info("loaded %s (%s, %d layers, d=%d, remote=%s)", spec.name, config.model_type, len(layers), text.hidden_size,
             spec.remote)
    return LoadedModel(
        lm=lm,
        tokenizer=lm.tokenizer,
        layers=layers,
        n_layers=len(layers),
        d_model=int(text.hidden_size),
        spec=spec,
        weights_id=weights_identity(spec, config),
    )


def dequantising_kwargs(config: Any) -> dict[str, Any]:
    """from_pretrained kwargs that load an FP8 checkpoint (e.g. Ministral 3 instruct) dequantised; empty otherwise."""
    qc = getattr(config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if method != "fp8":
        return {}
    from transformers import FineGrainedFP8Config

    return {"quantization_config": FineGrainedFP8Config(dequantize=True)}


def _image_text_model(spec: ModelSpec, kwargs: dict[str, Any]) -> TransformersModel | None:
    """A vision-language checkpoint (IMAGE_TEXT_MODEL_TYPES) loaded here by its own class and wrapped for text
    generation; None for every other checkpoint."""
    config = AutoConfig.from_pretrained(spec.name, revision=spec.revision)
    if config.model_type not in IMAGE_TEXT_MODEL_TYPES:
        return None
    if spec.remote:
        raise ValueError(f"{spec.name} ({config.model_type}) runs here only: emis loads it by its vision-language class, "
                         "which a remote request cannot name; set model.remote=false")
    module = AutoModelForImageTextToText.from_pretrained(spec.name, dtype=kwargs["dtype"], device_map=spec.device,
                                                         revision=spec.revision, **dequantising_kwargs(config))
    if spec.adapter:
        from peft import PeftModel  # imported where used: peft costs seconds at start-up

        module = PeftModel.from_pretrained(module, adapter_path(spec)).merge_and_unload()
    return TransformersModel(module, tokenizer=kwargs["tokenizer"], task="text-generation")


def resolve_layers(layers: Any, n_layers: int, setting: str = "layers") -> list[int]:
    """`all`, one index or a list (negative ones count from the end) as sorted distinct layer indices, checked against
    the model: the one layer rule of every stage (nnsight must visit layers in order). `setting` names the key in errors."""
    if isinstance(layers, str) and layers != "all":
        raise ValueError(f"{setting}={layers!r}: give 'all', an index or a list of indices")
    wanted = list(range(n_layers)) if layers == "all" else [layers] if isinstance(layers, int) else list(layers)
    if not wanted:
        raise ValueError(f"{setting} is empty: give 'all', an index or a list of indices")
    out = []
    for i in wanted:
        resolved = int(i) + n_layers if int(i) < 0 else int(i)
        if not 0 <= resolved < n_layers:
            raise ValueError(f"{setting}={i} is out of range for a model with {n_layers} layers (0..{n_layers - 1} or -1..-{n_layers})")
        out.append(resolved)
    return sorted(set(out))
