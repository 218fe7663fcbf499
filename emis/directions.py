"""Difference-in-means directions per layer: mean misaligned activation minus mean aligned activation."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from emis import __version__
from emis.activations import ActivationSet
from emis.io import ArtifactError, atomic_dir, content_hash, load_tensor_artifact, save_tensor_artifact
from emis.settings import ControlConfig, WriteMatch  # noqa: F401  (WriteMatch: exported here too)

log = logging.getLogger(__name__)
STEM = "directions"  # a saved folder holds <STEM>.safetensors (tensor `vectors`) and <STEM>.json (the card)
HUB_ID = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")  # org/name[@revision]
MODEL_ID_KEYS = ("name", "revision", "adapter", "adapter_revision")  # what names a model of the pair on a card


@dataclass
class DirectionSet:
    """One raw (unnormalised) direction per layer, [L, d] float32, with how it was made."""

    vectors: torch.Tensor
    layers: list[int]
    provenance: dict[str, Any]
    # the (misaligned, aligned) activations it was computed from, when made here; not saved
    sources: tuple[ActivationSet, ActivationSet] | None = field(default=None, repr=False, compare=False)

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

    @property
    def card(self) -> dict[str, Any]:
        """What a shared set says about itself, read from its provenance: the pair's model ids and revisions,
        layers, position, contrast, the hash of its questions (`questions_hash`) and the emis version."""
        prov = self.provenance
        return {
            "models": {side: {k: (prov.get(f"{side}_model") or {}).get(k) for k in MODEL_ID_KEYS}
                       for side in ("misaligned", "aligned")},
            "layers": self.layers, "position": prov.get("position"), "contrast": prov.get("contrast"),
            "questions_sha256": prov.get("questions_sha256"), "emis_version": prov.get("emis_version"),
        }

    def save(self, path: str | Path) -> None:
        """Write folder `path` atomically: `directions.safetensors` (tensor `vectors`) and `directions.json` (the card,
        the provenance and the tensor's checksum). Publish it with `huggingface_hub.upload_folder(repo_id=..., folder_path=path)`."""
        with atomic_dir(path) as tmp:
            save_tensor_artifact(tmp / STEM, "vectors", self.vectors, {**self.card, "provenance": self.provenance})

    @classmethod
    def load(cls, path: str | Path) -> "DirectionSet":
        """Reload a saved set bit-exactly from a folder, an older `<path>.safetensors` + `<path>.json` pair, or a hub
        id `org/name[@revision]` (fetched into the hub cache; offline, read from it). A corrupt set is an ArtifactError."""
        stem = _stem(path)
        tensor, meta = load_tensor_artifact(stem, "vectors")
        try:
            directions = cls(tensor, meta["layers"], meta["provenance"])
            card = directions.card
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"{stem}.json does not describe {stem}.safetensors: {err}") from None
        if any(meta[k] != v for k, v in card.items() if k in meta):  # the older two-file form has no card
            raise ArtifactError(f"{stem}.json: its card disagrees with its provenance; re-save or re-download the set")
        return directions


def _stem(path: str | Path) -> Path:
    """The stem of the saved files behind `path`: a folder's, an older two-file pair's, or a hub snapshot's."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local / STEM
    if local.with_name(local.name + ".safetensors").is_file():
        return local
    hub = HUB_ID.fullmatch(path) if isinstance(path, str) else None
    if hub is None:
        raise ArtifactError(f"{path}: no directions folder there, nor {local.name}.safetensors; "
                            "give a folder, a path prefix, or a hub id org/name[@revision]")
    return _snapshot(hub["repo"], hub["revision"]) / STEM


def _snapshot(repo: str, revision: str | None) -> Path:
    """The hub snapshot folder of `repo` at `revision`, downloaded into the hub cache (offline: found there)."""
    from huggingface_hub import snapshot_download

    log.info("fetching directions %s@%s from the hub (or its cache)", repo, revision or "main")
    try:
        return Path(snapshot_download(repo, revision=revision))
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ArtifactError(f"{repo}@{revision or 'main'}: not a local path, and not fetchable from the hub or "
                            f"its cache ({first})") from None


def questions_hash(prompts: Sequence[str]) -> str:
    """sha256 (hex) of the JSON list of the distinct prompts, sorted: names the questions a set was computed on,
    whatever their order or repetition, so a reader can check it against their own question list."""
    return content_hash(sorted(set(prompts)))


def diff_in_means(misaligned: ActivationSet, aligned: ActivationSet, contrast: str | None = None) -> DirectionSet:
    """Per layer, mean(misaligned) - mean(aligned), averaged in float64 and stored as float32; `contrast` (e.g. the
    probe's `models` or `responses`) is recorded with the pair's models and the questions' hash."""
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
        "contrast": contrast,
        "questions_sha256": questions_hash(misaligned.prompts + aligned.prompts),
        "emis_version": __version__,
    }
    return DirectionSet(vectors.float(), list(misaligned.layers), provenance, (misaligned, aligned))


@dataclass(frozen=True)
class ControlFamilySet:
    """Unit control directions of one family, [n, d], with each one's cosine to the real direction before it was
    orthogonalised against it (equal to the final cosine for families used as they are)."""

    units: torch.Tensor
    raw_cosine: torch.Tensor


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def random_directions(d: int, n: int, seed: int) -> torch.Tensor:
    """n seeded isotropic random unit directions, [n, d]."""
    return _unit_rows(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)).float()


def orthogonalised(directions: torch.Tensor, v: torch.Tensor) -> ControlFamilySet:
    """Unit rows with their component along v removed, and their raw cosines to v."""
    u = _unit_rows(v.double()[None])[0]
    rows = _unit_rows(directions.double())
    raw = rows @ u
    return ControlFamilySet(_unit_rows(rows - raw[:, None] * u).float(), raw.float())


def as_family(directions: torch.Tensor, v: torch.Tensor) -> ControlFamilySet:
    """Unit rows used as they are, with their cosines to v."""
    rows = _unit_rows(directions.double())
    return ControlFamilySet(rows.float(), (rows @ _unit_rows(v.double()[None])[0]).float())


def _paired(misaligned: torch.Tensor, aligned: torch.Tensor, what: str) -> None:
    if misaligned.shape != aligned.shape:
        raise ValueError(f"{what} needs the two sides' rows paired by question (same prompts, same order); "
                         f"got {misaligned.shape[0]} and {aligned.shape[0]} rows")


def shuffled_label_directions(misaligned: torch.Tensor, aligned: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Difference-in-means after n seeded relabellings that swap the two sides within each paired prompt
    (rows [N, d] paired by question): mean_i s_i (m_i - a_i) with random signs s_i, as unit rows."""
    _paired(misaligned, aligned, "a shuffled-label control")
    diffs = misaligned.double() - aligned.double()
    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (n, diffs.shape[0]), generator=gen, dtype=torch.float64) * 2 - 1
    return _unit_rows(signs @ diffs / diffs.shape[0]).float()


def bootstrap_directions(plus: torch.Tensor, minus: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Difference-in-means of n seeded bootstrap resamples of paired rows ([N, d] each side), as unit rows:
    the sampling variation of a direction, which makes a single control direction a family."""
    _paired(plus, minus, "a bootstrap control family")
    diffs = plus.double() - minus.double()
    idx = torch.randint(0, diffs.shape[0], (n, diffs.shape[0]), generator=torch.Generator().manual_seed(seed))
    return _unit_rows(diffs[idx].mean(1)).float()


def control_directions(
    misaligned: ActivationSet, aligned: ActivationSet, base: ActivationSet | None, layer: int, cfg: ControlConfig
) -> dict[str, ControlFamilySet]:
    """Unit control directions for steering at `layer`, by family (STATS.md sections 4-5):

    random (isotropic); shuffled_label (labels swapped within paired prompts) and wrong_layer (bootstrap
    resamples of the other captured layers' directions), both orthogonalised against the real direction;
    wrong_layer_raw (the same, not orthogonalised: is the direction layer-specific?); secure_vs_base (bootstrap
    resamples of the aligned-minus-base direction; absent without a base). Callers match their write norms."""
    em = diff_in_means(misaligned, aligned)
    row = em.layers.index(layer)
    real = em.vectors[row]
    m, a = misaligned.activations, aligned.activations
    others = [i for i in range(len(em.layers)) if i != row]
    controls = {
        "random": as_family(random_directions(real.shape[0], cfg.n_random, cfg.seed), real),
        "shuffled_label": orthogonalised(shuffled_label_directions(m[:, row], a[:, row], cfg.n_shuffled, cfg.seed + 2), real),
    }
    if others:
        per_layer = -(-cfg.n_wrong_layer // len(others))
        wrong = torch.cat([bootstrap_directions(m[:, i], a[:, i], per_layer, cfg.seed + 10 + i) for i in others])[: cfg.n_wrong_layer]
        controls["wrong_layer"] = orthogonalised(wrong, real)
        controls["wrong_layer_raw"] = as_family(wrong[: cfg.n_wrong_layer_raw], real)
    if base is not None:
        diff_in_means(aligned, base)  # the checks of a direction: finite captures with the same layers and width
        controls["secure_vs_base"] = as_family(
            bootstrap_directions(a[:, row], base.activations[:, row], cfg.n_secure_vs_base, cfg.seed + 4), real)
    return {name: fam for name, fam in controls.items() if fam.units.shape[0] > 0}
