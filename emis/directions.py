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
