"""Difference-in-means directions per layer: mean misaligned activation minus mean aligned activation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emis import __version__
from emis.capture import ActivationSet
from emis.io import ArtifactError, load_tensor_artifact, save_tensor_artifact


@dataclass
class DirectionSet:
    """One raw (unnormalised) direction per layer, [L, d] float32, with how it was made."""

    vectors: torch.Tensor
    layers: list[int]
    provenance: dict[str, Any]

    def __post_init__(self) -> None:
        if self.vectors.dim() != 2 or self.vectors.shape[0] != len(self.layers):
            raise ValueError(f"vectors {list(self.vectors.shape)} do not fit {len(self.layers)} layers x d")

    @property
    def norms(self) -> torch.Tensor:
        """L2 norm of each layer's direction, [L]."""
        return self.vectors.norm(dim=-1)

    @property
    def units(self) -> torch.Tensor:
        """Unit-norm directions, [L, d] (a zero direction stays zero)."""
        return self.vectors / self.norms.clamp_min(torch.finfo(self.vectors.dtype).tiny).unsqueeze(-1)

    def layer(self, index: int) -> torch.Tensor:
        """The raw direction of model layer `index` (a layer number, not a row number)."""
        return self.vectors[self.layers.index(index)]

    def save(self, path: str | Path) -> None:
        """Write `<path>.safetensors` (tensor `vectors`) and `<path>.json`, each atomically."""
        save_tensor_artifact(path, "vectors", self.vectors, {"layers": self.layers, "provenance": self.provenance})

    @classmethod
    def load(cls, path: str | Path) -> "DirectionSet":
        """Reload a saved set bit-exactly; a mismatch between tensor and sidecar is an ArtifactError."""
        tensor, meta = load_tensor_artifact(path, "vectors")
        try:
            return cls(tensor, meta["layers"], meta["provenance"])
        except (KeyError, ValueError) as err:
            raise ArtifactError(f"{path}.json does not describe {path}.safetensors: {err}") from None


def diff_in_means(misaligned: ActivationSet, aligned: ActivationSet) -> DirectionSet:
    """Per layer, mean(misaligned) - mean(aligned), averaged in float64 and stored as float32."""
    for side, acts in (("misaligned", misaligned), ("aligned", aligned)):
        if acts.activations.shape[0] == 0:
            raise ValueError(f"the {side} activation set is empty; a direction needs examples on both sides")
        if not torch.isfinite(acts.activations).all():
            raise ValueError(f"the {side} activations contain NaN or inf; recapture them (delete the cached capture) "
                             "or check the model's dtype")
    if misaligned.layers != aligned.layers:
        raise ValueError(f"layers differ: misaligned has {misaligned.layers}, aligned has {aligned.layers}")
    d_mis, d_al = misaligned.activations.shape[-1], aligned.activations.shape[-1]
    if d_mis != d_al:
        raise ValueError(f"widths differ: misaligned d={d_mis}, aligned d={d_al}")
    if misaligned.position != aligned.position:
        raise ValueError(f"positions differ: misaligned {misaligned.position!r}, aligned {aligned.position!r}")
    vectors = misaligned.activations.double().mean(0) - aligned.activations.double().mean(0)
    provenance = {
        "method": "diff_in_means",
        "position": misaligned.position,
        "n_misaligned": int(misaligned.activations.shape[0]),
        "n_aligned": int(aligned.activations.shape[0]),
        "misaligned_model": misaligned.model,
        "aligned_model": aligned.model,
        "emis_version": __version__,
    }
    return DirectionSet(vectors.float(), list(misaligned.layers), provenance)


@dataclass(frozen=True)
class ControlConfig:
    """How many control directions of each family to draw (owned by the steering config)."""

    n_random: int
    n_orthogonal: int
    n_shuffled: int
    seed: int


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def random_directions(d: int, n: int, seed: int) -> torch.Tensor:
    """n seeded isotropic random unit directions, [n, d]."""
    return _unit_rows(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)).float()


def orthogonal_directions(v: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n seeded random unit directions with their component along v removed, [n, d]."""
    u = _unit_rows(v.double()[None])[0]
    r = torch.randn(n, v.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return _unit_rows(r - (r @ u)[:, None] * u).float()


def shuffled_label_directions(misaligned: torch.Tensor, aligned: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Difference-in-means of n seeded random relabellings of the pooled rows ([N, d] each side), as unit rows."""
    pooled = torch.cat([misaligned, aligned]).double()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        perm = torch.randperm(pooled.shape[0], generator=gen)
        a, b = pooled[perm[: misaligned.shape[0]]], pooled[perm[misaligned.shape[0] :]]
        out.append(a.mean(0) - b.mean(0))
    return _unit_rows(torch.stack(out)).float()


def control_directions(
    misaligned: ActivationSet, aligned: ActivationSet, base: ActivationSet, layer: int, cfg: ControlConfig
) -> dict[str, torch.Tensor]:
    """Unit control directions for steering at `layer`, by family: random, orthogonal, wrong_layer, shuffled_label, secure_vs_base.

    Callers scale every one to the real direction's magnitude, so only the direction differs."""
    em = diff_in_means(misaligned, aligned)
    row = em.layers.index(layer)
    controls = {
        "random": random_directions(em.vectors.shape[1], cfg.n_random, cfg.seed),
        "orthogonal": orthogonal_directions(em.vectors[row], cfg.n_orthogonal, cfg.seed + 1),
        "wrong_layer": em.units[[i for i in range(len(em.layers)) if i != row]],
        "shuffled_label": shuffled_label_directions(
            misaligned.activations[:, row], aligned.activations[:, row], cfg.n_shuffled, cfg.seed + 2
        ),
        "secure_vs_base": diff_in_means(aligned, base).units[[row]],
    }
    return {name: dirs for name, dirs in controls.items() if dirs.shape[0] > 0}
