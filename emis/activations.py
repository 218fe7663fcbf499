"""Residual-stream capture: every requested layer in one nnsight trace per batch, saved as safetensors + JSON."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from emis import __version__
from emis.io import (ArtifactError, code_fingerprint, content_hash, entry_lock, load_tensor_artifact, same_code,
                     save_tensor_artifact)
from emis.models import LoadedModel, residual, resolve_layers, traced_batches
from emis.settings import POSITIONS

log = logging.getLogger(__name__)
Position = Literal["last_prompt", "response_mean"]
# The code that computes a capture's numbers (tokenising, tracing, reading out; how the model loads).
CAPTURE_CODE = ("emis.activations", "emis.models")


@dataclass
class ActivationSet:
    """Residual activations [N prompts, L layers, d] with what produced them."""

    activations: torch.Tensor
    layers: list[int]
    position: str
    prompts: list[str]
    responses: list[str] | None
    model: dict[str, Any]
    emis_version: str
    code: str | None = None  # fingerprint of the code that captured it (CAPTURE_CODE)

    def __post_init__(self) -> None:
        if self.activations.dim() != 3 or tuple(self.activations.shape[:2]) != (len(self.prompts), len(self.layers)):
            raise ValueError(
                f"activations {list(self.activations.shape)} do not fit {len(self.prompts)} prompts x {len(self.layers)} layers x d"
            )
        if self.responses is not None and len(self.responses) != len(self.prompts):
            raise ValueError(f"{len(self.responses)} responses for {len(self.prompts)} prompts")

    def _meta(self) -> dict[str, Any]:
        return {
            "layers": self.layers, "position": self.position, "prompts": self.prompts,
            "responses": self.responses, "model": self.model, "emis_version": self.emis_version, "code": self.code,
        }

    def subset(self, rows: Sequence[int]) -> "ActivationSet":
        """The given rows, in that order, with their prompts (and responses)."""
        rows = [int(i) for i in rows]
        return ActivationSet(self.activations[rows], self.layers, self.position, [self.prompts[i] for i in rows],
                             None if self.responses is None else [self.responses[i] for i in rows], self.model, self.emis_version,
                             self.code)

    def concat(self, other: "ActivationSet") -> "ActivationSet":
        """Rows of self then other; both captured at the same layers and position."""
        if (self.layers, self.position) != (other.layers, other.position):
            raise ValueError("only sets captured at the same layers and position can be joined")
        responses = None if self.responses is None or other.responses is None else self.responses + other.responses
        return ActivationSet(torch.cat([self.activations, other.activations]), self.layers, self.position,
                             self.prompts + other.prompts, responses, self.model, self.emis_version, self.code)

    def save(self, path: str | Path) -> None:
        """Write `<path>.safetensors` (tensor `activations`) and `<path>.json`, each atomically."""
        save_tensor_artifact(path, "activations", self.activations, self._meta())

    @classmethod
    def load(cls, path: str | Path) -> "ActivationSet":
        """Reload a saved set bit-exactly; a mismatch between tensor and sidecar is an ArtifactError."""
        tensor, meta = load_tensor_artifact(path, "activations")
        try:
            return cls(tensor, meta["layers"], meta["position"], meta["prompts"], meta["responses"],
                       meta["model"], meta["emis_version"], meta.get("code"))
        except (KeyError, ValueError) as err:
            raise ArtifactError(f"{path}.json does not describe {path}.safetensors: {err}") from None


def encode_texts(model: LoadedModel, prompts: list[str], responses: list[str] | None) -> tuple[dict, torch.Tensor | None]:
    """Left-padded ids of the texts, and for responses a [B, T] bool mask of each row's response tokens."""
    tok = model.tokenizer
    texts = prompts if responses is None else [p + r for p, r in zip(prompts, responses)]
    # The callers' prompts are chat-templated and already carry any BOS token.
    enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    inputs = {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask}
    if responses is None:
        return inputs, None
    width = enc.input_ids.shape[1]
    mask = torch.zeros(enc.input_ids.shape, dtype=torch.bool)
    prompt_ids = tok(prompts, add_special_tokens=False).input_ids
    for row, (ids, n_total) in enumerate(zip(prompt_ids, enc.attention_mask.sum(1).tolist())):
        n_resp = n_total - len(ids)
        if n_resp < 1:
            raise ValueError(f"response {row} of this batch adds no tokens to its prompt; responses must be non-empty")
        if enc.input_ids[row, width - n_total : width - n_resp].tolist() != ids:
            log.warning("row %d: prompt and response merge into one token at their boundary; span is approximate", row)
        mask[row, width - n_resp :] = True  # left padding: the response is the last n_resp positions
    return inputs, mask


def left_padded(tok: Any, seqs: Sequence[Sequence[int]], tails: Sequence[int]) -> tuple[dict, torch.Tensor]:
    """Left-padded ids and attention mask of token-id rows, and a [B, T] bool mask of each row's last tails[i] positions."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(x) for x in seqs)
    tail = torch.zeros(len(seqs), width, dtype=torch.bool)
    for row, n in enumerate(tails):
        tail[row, width - n :] = True
    inputs = {"input_ids": torch.tensor([[pad] * (width - len(x)) + list(x) for x in seqs]),
              "attention_mask": torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in seqs])}
    return inputs, tail


def _readout(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, d] from a [B, T, d] residual: the last position, or the mean over the masked positions."""
    if mask is None:
        return h[:, -1]
    mask = mask.to(h.device).unsqueeze(-1)
    return torch.where(mask, h, torch.zeros((), dtype=h.dtype, device=h.device)).sum(1) / mask.sum(1)


def _trace_batch(model: LoadedModel, batch: tuple[dict, torch.Tensor | None, list[int]]) -> torch.Tensor:
    """One forward pass reading every requested layer, stopped once the last of them is read: [B, L, d] float32."""
    inputs, mask, layers = batch
    with torch.no_grad(), model.lm.trace(inputs) as tracer:  # no autograd graph: reading only
        saved = torch.stack([_readout(residual(model.layers[i].output), mask).float() for i in layers], dim=1).detach().cpu().save()
        tracer.stop()  # the later layers, the final norm and the lm_head (a fifth of a forward at 1B) would go unread
    return saved


def capture_residuals(
    model: LoadedModel,
    prompts: list[str],
    layers: Literal["all"] | Sequence[int],
    position: Position,
    responses: list[str] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> ActivationSet:
    """Residual stream after each requested decoder layer, at the last prompt token or averaged over the response."""
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    if (position == "response_mean") != (responses is not None):
        raise ValueError("position='response_mean' needs responses, and 'last_prompt' takes none")
    if responses is not None and len(responses) != len(prompts):
        raise ValueError(f"{len(responses)} responses for {len(prompts)} prompts")
    if not prompts:
        raise ValueError("no prompts to capture")
    layer_ids = resolve_layers(layers, model.n_layers)
    batches = []
    for start in range(0, len(prompts), batch_size):
        batch_resp = None if responses is None else responses[start : start + batch_size]
        batches.append((*encode_texts(model, prompts[start : start + batch_size], batch_resp), layer_ids))
    chunks = traced_batches(model, batches, _trace_batch, "capture", progress)
    return ActivationSet(
        activations=torch.cat(chunks),
        layers=layer_ids,
        position=position,
        prompts=list(prompts),
        responses=None if responses is None else list(responses),
        model=model.spec.to_dict(),
        emis_version=__version__,
        code=code_fingerprint(*CAPTURE_CODE),
    )


def cache_key(
    model: LoadedModel, prompts: list[str], layers: list[int], position: str, responses: list[str] | None
) -> str:
    """sha256 of the inputs that determine the activations: model identity, texts, position, layers. The code that
    computes them is not in the key but in the sidecar, so an entry of other code is found, and recomputed."""
    parts = [*model.identity, prompts, responses, position, layers]
    return content_hash(parts)


def capture_cached(
    model: LoadedModel,
    prompts: list[str],
    layers: Literal["all"] | Sequence[int],
    position: Position,
    cache_dir: str | Path,
    responses: list[str] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[ActivationSet, Path]:
    """`capture_residuals`, reusing `<cache_dir>/<content hash>` when the current code saved it, and saving it
    otherwise (one process at a time per entry).

    Returns the set and its path (`<path>.safetensors` + `<path>.json`)."""
    layer_ids = resolve_layers(layers, model.n_layers)
    path = Path(cache_dir) / cache_key(model, list(prompts), layer_ids, position, responses)
    with entry_lock(path):
        if path.with_name(path.name + ".safetensors").exists():
            cached = ActivationSet.load(path)
            if (cached.model, cached.prompts, cached.layers, cached.position, cached.responses) != (
                model.spec.to_dict(), list(prompts), layer_ids, position, None if responses is None else list(responses)
            ):
                raise ArtifactError(f"the cached capture {path}.safetensors was made from another model or prompt set; "
                                    "delete it to recapture")
            if same_code(f"activations cache {path}", cached.code, code_fingerprint(*CAPTURE_CODE)):
                log.info("activations cache hit: %s", path)
                return cached, path
        acts = capture_residuals(model, prompts, layer_ids, position, responses, batch_size, progress)
        acts.save(path)
    log.info("activations cached: %s", path)
    return acts, path
