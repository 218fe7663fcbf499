"""An EM monitor: project one layer's residual on the unit EM direction and flag what scores above a threshold.

- `Monitor`: layer, unit direction, threshold, position. `score(model, prompts)` reads the layer through one
  nnsight trace per batch (`capture_residuals`, local or remote per `model.spec`) and projects on the direction.
- `calibrate(positive, negative, cfg)`: on one seeded split of the questions into fit / calibration / held-out
  rows, the direction is the difference in means of the fit rows, the threshold is set on the negative
  (aligned) calibration rows at the configured false-positive rate, and AUROC, ROC curve, FPR and TPR are
  measured on the held-out rows, with percentile-bootstrap intervals.
- `MonitorCallback`: for `emis.organisms.train.train(on_step=...)`, every N steps scores a fixed probe set on
  the model being trained and samples answers to held-out questions for the code-spillover rate.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from nnsight import TransformersModel
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emis import __version__
from emis.activations import POSITIONS, ActivationSet, capture_residuals
from emis.directions import DirectionSet, diff_in_means
from emis.io import ArtifactError, load_tensor_artifact, save_figure, save_tensor_artifact
from emis.judges.spillover import spillover_rate
from emis.models import LoadedModel, ModelSpec, layer_envoys, resolve_layers
from emis.organisms.sample import SamplingConfig, sample_answers
from emis.settings import MonitorConfig
from emis.stats import auroc, bootstrap_ci

log = logging.getLogger(__name__)
LogFn = Callable[[dict[str, float], int], None]


# --------------------------------------------------------------------------------------------- the monitor


def project(x: torch.Tensor | np.ndarray, unit: torch.Tensor | np.ndarray) -> np.ndarray:
    """Scores [N] of activations [N, d] on a unit direction [d], in float64 (the one projection everything uses)."""
    x = x.double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    u = unit.double().numpy() if isinstance(unit, torch.Tensor) else np.asarray(unit, dtype=np.float64)
    return x @ u


@dataclass
class MonitorResult:
    """Scores (projection on the unit direction) of a batch and which of them exceed the threshold."""

    scores: np.ndarray  # [N] float64
    flags: np.ndarray  # [N] bool: score > threshold

    @property
    def mean_score(self) -> float:
        return float(self.scores.mean())

    @property
    def flag_rate(self) -> float:
        return float(self.flags.mean())


@dataclass
class Monitor:
    """Flags inputs whose residual after decoder `layer`, at `position`, projects above `threshold` on `direction`."""

    layer: int
    direction: torch.Tensor  # [d] float32, unit norm
    threshold: float
    position: str = "last_prompt"
    fpr: float = 0.05  # the false-positive rate the threshold was calibrated for
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.direction.dim() != 1:
            raise ValueError(f"direction must be a [d] vector, got shape {list(self.direction.shape)}")
        if not math.isclose(float(self.direction.double().norm()), 1.0, abs_tol=1e-5):
            raise ValueError("direction must have unit norm; build monitors with Monitor.from_directions")

    @classmethod
    def from_directions(
        cls, directions: DirectionSet, layer: int, threshold: float, position: str | None = None,
        fpr: float = 0.05, provenance: dict[str, Any] | None = None,
    ) -> "Monitor":
        """A monitor on model layer `layer` of `directions` (a layer number, not a row), normalised to unit length."""
        if layer not in directions.layers:
            raise ValueError(f"layer {layer} is not in the direction set's layers {directions.layers}")
        unit = directions.units[directions.layers.index(layer)].float().contiguous()
        if float(unit.norm()) == 0.0:
            raise ValueError(f"the direction at layer {layer} is zero; both sides have the same mean")
        position = position or directions.provenance.get("position", "last_prompt")
        prov = {"directions": directions.provenance, **(provenance or {})}
        return cls(layer=int(layer), direction=unit, threshold=float(threshold), position=position, fpr=float(fpr), provenance=prov)

    def project(self, acts: ActivationSet) -> np.ndarray:
        """Scores of activations captured beforehand (at this monitor's layer and position)."""
        if acts.position != self.position or self.layer not in acts.layers:
            raise ValueError(f"activations at {acts.position} layers {acts.layers} cannot feed a monitor at "
                             f"{self.position} layer {self.layer}")
        return project(acts.activations[:, acts.layers.index(self.layer)], self.direction)

    def flag(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) > self.threshold

    def score(self, model: LoadedModel, prompts: Sequence[str], responses: Sequence[str] | None = None,
              batch_size: int = 32) -> MonitorResult:
        """Score chat-templated prompts (and, for response_mean, their responses) on `model`: one trace per batch."""
        if model.d_model != self.direction.shape[0]:
            raise ValueError(f"the monitor's direction has d={self.direction.shape[0]}, the model d={model.d_model}: "
                             "a monitor applies only to checkpoints of the model it was calibrated on")
        if not 0 <= self.layer < model.n_layers:
            raise ValueError(f"the monitor reads layer {self.layer}, the model has {model.n_layers} layers")
        with torch.no_grad():
            acts = capture_residuals(model, list(prompts), [self.layer], self.position,
                                     None if responses is None else list(responses), batch_size, progress=False)
        scores = project(acts.activations[:, 0], self.direction)
        return MonitorResult(scores=scores, flags=self.flag(scores))

    def save(self, path: str | Path) -> None:
        """Write `<path>.safetensors` (tensor `direction`) and `<path>.json`, each atomically."""
        meta = {"layer": self.layer, "threshold": self.threshold, "position": self.position, "fpr": self.fpr,
                "provenance": self.provenance, "emis_version": __version__}
        save_tensor_artifact(path, "direction", self.direction, meta)

    @classmethod
    def load(cls, path: str | Path) -> "Monitor":
        """Reload a saved monitor bit-exactly; a mismatch between tensor and sidecar is an ArtifactError."""
        tensor, meta = load_tensor_artifact(path, "direction")
        try:
            return cls(int(meta["layer"]), tensor, float(meta["threshold"]), meta["position"], float(meta["fpr"]),
                       meta["provenance"])
        except (KeyError, ValueError, TypeError) as err:
            raise ArtifactError(f"{path}.json does not describe a monitor: {err}") from None


def wrap_module(module: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str = "in-memory") -> LoadedModel:
    """A LoadedModel around a transformers model held in memory (e.g. mid-training), for `Monitor.score`.

    nnsight 0.8 wraps a pre-loaded module in place (`TransformersModel(module, tokenizer=...)`); the module
    keeps training and generating as before, and every trace sees its current weights."""
    if tokenizer.padding_side != "left":
        raise ValueError("the tokenizer must pad on the left for last-token readouts")
    lm = TransformersModel(module, tokenizer=tokenizer)
    layers = layer_envoys(lm, name)
    dtype = str(next(module.parameters()).dtype).removeprefix("torch.")
    device = str(next(module.parameters()).device)
    return LoadedModel(lm=lm, tokenizer=tokenizer, layers=layers, n_layers=len(layers),
                       d_model=int(module.config.get_text_config().hidden_size), spec=ModelSpec(name=name, dtype=dtype, device=device),
                       weights_id=f"{name}@{id(module)}")


# --------------------------------------------------------------------------------------------- calibration


@dataclass
class Split:
    """Row indices of the positive and the negative set, per role: fit (direction), calibration (threshold), test."""

    pos: dict[str, list[int]]
    neg: dict[str, list[int]]
    paired: bool  # the two sets hold the same prompts, and a question's two rows always share a role


@dataclass
class Calibration:
    """Held-out quality of a calibrated monitor: AUROC, ROC curve, and the operating point, with intervals."""

    layer: int
    threshold: float
    fpr_target: float
    auroc: float
    auroc_ci: tuple[float, float]
    fpr: float  # measured on held-out negatives
    fpr_ci: tuple[float, float]
    tpr: float  # measured on held-out positives
    tpr_ci: tuple[float, float]
    fpr_calibration: float  # on the rows the threshold was set on
    roc_fpr: list[float]
    roc_tpr: list[float]
    roc_thresholds: list[float]
    layer_auroc_calibration: dict[int, float]  # per candidate layer, on the calibration rows (the layer choice)
    n: dict[str, dict[str, int]]
    config: dict[str, Any]
    split: Split

    def summary(self) -> dict[str, Any]:
        """The numbers without the split indices and the curve."""
        return {
            "layer": self.layer, "threshold": self.threshold, "fpr_target": self.fpr_target,
            "auroc": self.auroc, "auroc_ci95": list(self.auroc_ci), "fpr": self.fpr, "fpr_ci95": list(self.fpr_ci),
            "tpr": self.tpr, "tpr_ci95": list(self.tpr_ci), "fpr_calibration": self.fpr_calibration,
            "layer_auroc_calibration": {str(k): v for k, v in self.layer_auroc_calibration.items()}, "n": self.n,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "roc": {"fpr": self.roc_fpr, "tpr": self.roc_tpr, "thresholds": self.roc_thresholds},
                "split": asdict(self.split), "config": self.config}


def fpr_threshold(negative_scores: np.ndarray, fpr: float) -> float:
    """The lowest negative score that leaves at most floor(fpr * n) of the n negatives strictly above it."""
    s = np.sort(np.asarray(negative_scores, dtype=np.float64))
    if not 0.0 <= fpr < 1.0 or len(s) == 0:
        raise ValueError(f"fpr must lie in [0, 1) and negatives must be non-empty (fpr={fpr}, n={len(s)})")
    allowed = int(math.floor(fpr * len(s) + 1e-9))
    return float(s[len(s) - 1 - allowed])


def _split(positive: ActivationSet, negative: ActivationSet, cfg: MonitorConfig) -> Split:
    """Seeded, stratified fit / calibration / test rows; by question when both sets hold the same prompts."""
    if cfg.calibration not in ("split", "train"):
        raise ValueError(f"monitor.calibration must be 'split' or 'train', got {cfg.calibration!r}")
    n_pos, n_neg = len(positive.prompts), len(negative.prompts)
    paired = positive.prompts == negative.prompts
    # Paired: split the questions, and both rows of a question share a role (stratified by construction).
    y = None if paired else np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    idx = np.arange(n_pos if paired else n_pos + n_neg)
    train, test = train_test_split(idx, test_size=cfg.test_size, random_state=cfg.seed, stratify=y)
    if cfg.calibration == "split":
        fit, cal = train_test_split(train, test_size=cfg.calibration_size, random_state=cfg.seed + 1,
                                    stratify=None if y is None else y[train])
    else:
        fit, cal = train, train
    rows = {"fit": fit, "calibration": cal, "test": test}
    if paired:
        pos = {k: sorted(int(i) for i in v) for k, v in rows.items()}
        return Split(pos=pos, neg={k: list(v) for k, v in pos.items()}, paired=True)
    pos = {k: sorted(int(i) for i in v if i < n_pos) for k, v in rows.items()}
    neg = {k: sorted(int(i) - n_pos for i in v if i >= n_pos) for k, v in rows.items()}
    return Split(pos=pos, neg=neg, paired=False)


def rate_interval(flags: np.ndarray, n_resamples: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile bootstrap interval of a rate over resampled rows of one class."""
    return bootstrap_ci((np.asarray(flags, float),), np.mean, level, n_resamples, seed)


def calibrate(positive: ActivationSet, negative: ActivationSet, cfg: MonitorConfig,
              provenance: dict[str, Any] | None = None) -> tuple[Monitor, Calibration]:
    """Fit a monitor that flags `positive` (misaligned) over `negative` (aligned) and measure it on held-out rows.

    Direction: difference in means of the fit rows at the chosen layer. Threshold: `fpr_threshold` of the
    negative calibration rows' scores. AUROC, ROC, FPR and TPR: held-out rows only; 95% intervals from a
    percentile bootstrap of the held-out rows within each class (FPR/TPR resample negatives/positives)."""
    if positive.layers != negative.layers or positive.position != negative.position:
        raise ValueError("positive and negative activations must share layers and position")
    split = _split(positive, negative, cfg)
    for side, rows in (("positive", split.pos), ("negative", split.neg)):
        if any(len(v) == 0 for v in rows.values()):
            raise ValueError(f"too few {side} rows for a fit / calibration / test split: {[len(v) for v in rows.values()]}")
    directions = diff_in_means(positive.subset(split.pos["fit"]), negative.subset(split.neg["fit"]))
    layer_auroc: dict[int, float] = {}
    for row, layer in enumerate(directions.layers):
        u = directions.units[row]
        s_pos, s_neg = (project(a.activations[rows["calibration"], row], u) for a, rows in
                        ((positive, split.pos), (negative, split.neg)))
        layer_auroc[layer] = float(roc_auc_score(np.r_[np.ones(len(s_pos)), np.zeros(len(s_neg))], np.r_[s_pos, s_neg]))
    if cfg.layer == "best":
        layer = max(layer_auroc, key=lambda k: (layer_auroc[k], k))  # ties: the later layer
    elif int(cfg.layer) < 0:  # counts from the end of the captured layers (of the model when all are captured)
        layer = directions.layers[resolve_layers(int(cfg.layer), len(directions.layers), "monitor.layer")[0]]
    else:
        layer = int(cfg.layer)
        if layer not in directions.layers:
            raise ValueError(f"monitor.layer={cfg.layer} is not among the captured layers {directions.layers}")
    row = directions.layers.index(layer)
    u = directions.units[row]
    scores = {side: project(a.activations[:, row], u) for side, a in (("pos", positive), ("neg", negative))}
    threshold = fpr_threshold(scores["neg"][split.neg["calibration"]], cfg.fpr)
    monitor = Monitor.from_directions(directions, layer, threshold, positive.position, cfg.fpr, provenance)

    pos_te, neg_te = scores["pos"][split.pos["test"]], scores["neg"][split.neg["test"]]
    y_te = np.r_[np.ones(len(pos_te), int), np.zeros(len(neg_te), int)]
    s_te = np.r_[pos_te, neg_te]
    roc_f, roc_t, roc_th = roc_curve(y_te, s_te)
    tp_flags, fp_flags = pos_te > threshold, neg_te > threshold
    calibration = Calibration(
        layer=layer, threshold=threshold, fpr_target=cfg.fpr,
        auroc=float(roc_auc_score(y_te, s_te)), auroc_ci=bootstrap_ci((pos_te, neg_te), auroc, cfg.ci_level, cfg.n_bootstrap, cfg.seed),
        fpr=float(fp_flags.mean()), fpr_ci=rate_interval(fp_flags, cfg.n_bootstrap, cfg.seed + 1, cfg.ci_level),
        tpr=float(tp_flags.mean()), tpr_ci=rate_interval(tp_flags, cfg.n_bootstrap, cfg.seed + 2, cfg.ci_level),
        fpr_calibration=float((scores["neg"][split.neg["calibration"]] > threshold).mean()),
        roc_fpr=roc_f.tolist(), roc_tpr=roc_t.tolist(), roc_thresholds=[float(t) if np.isfinite(t) else None for t in roc_th],
        layer_auroc_calibration=layer_auroc,
        n={side: {k: len(v) for k, v in rows.items()} for side, rows in (("positive", split.pos), ("negative", split.neg))},
        config=asdict(cfg), split=split,
    )
    return monitor, calibration


def plot_roc(curves: dict[str, Calibration], path: str | Path, title: str = "Monitor ROC on held-out rows") -> None:
    """PNG of each contrast's held-out ROC curve with its operating point (threshold at the target FPR)."""
    fig = Figure(figsize=(5.6, 5.0), layout="constrained")
    ax = fig.add_subplot()
    for color, (name, cal) in zip(("C0", "C1", "C2", "C3"), curves.items()):
        ax.plot(cal.roc_fpr, cal.roc_tpr, "-", color=color, drawstyle="steps-post",
                label=f"{name}: AUROC {cal.auroc:.3f} [{cal.auroc_ci[0]:.3f}, {cal.auroc_ci[1]:.3f}]")
        ax.plot([cal.fpr], [cal.tpr], "o", color=color, ms=6,
                label=f"{name} at threshold: FPR {cal.fpr:.3f}, TPR {cal.tpr:.3f}")
    target = next(iter(curves.values())).fpr_target
    ax.axvline(target, color="grey", lw=0.8, ls=":", label=f"target FPR {target:g}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(-0.01, 1.01), ylim=(-0.01, 1.02), title=title)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------- fine-tuning callback


@dataclass
class CurvePoint:
    step: int
    mean_score: float
    flag_rate: float
    spillover: float


class MonitorCallback:
    """`on_step` for `emis.organisms.train.train`: at step 0 (call `measure(0, model)` before training), every
    `every` steps and at `last_step`, score `probe_prompts` with the monitor on the model being trained and
    sample one answer per `spill_questions` for the code-spillover rate.

    Each point goes to Python logging and to `log_fn(dict, step)` (e.g. `lambda d, s: wandb.log(d, step=s)`).
    The global torch RNG is saved and restored around each measurement, so training is unchanged by it."""

    def __init__(self, monitor: Monitor, tokenizer: PreTrainedTokenizerBase, probe_prompts: Sequence[str],
                 spill_questions: Sequence[str], sampling: SamplingConfig, every: int, last_step: int | None = None,
                 log_fn: LogFn | None = None, batch_size: int = 64) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if not probe_prompts or not spill_questions:
            raise ValueError("the callback needs probe prompts and spillover questions")
        self.monitor, self.tokenizer, self.sampling = monitor, tokenizer, sampling
        self.probe_prompts, self.spill_questions = list(probe_prompts), list(spill_questions)
        self.every, self.last_step, self.log_fn, self.batch_size = every, last_step, log_fn, batch_size
        self.points: list[CurvePoint] = []
        self._wrapped: tuple[int, LoadedModel] | None = None

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.last_step

    def __call__(self, step: int, model: PreTrainedModel) -> None:
        if self.due(step):
            self.measure(step, model)

    def _loaded(self, model: PreTrainedModel) -> LoadedModel:
        if self._wrapped is None or self._wrapped[0] != id(model):
            self._wrapped = (id(model), wrap_module(model, self.tokenizer, name="training"))
        return self._wrapped[1]

    def measure(self, step: int, model: PreTrainedModel) -> CurvePoint:
        """Score and sample now; record, log and return the point."""
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]):
            result = self.monitor.score(self._loaded(model), self.probe_prompts, batch_size=self.batch_size)
            answers = sample_answers(model, self.tokenizer, self.spill_questions, self.sampling)
        model.train(was_training)
        point = CurvePoint(step, result.mean_score, result.flag_rate, spillover_rate(answers))
        self.points.append(point)
        log.info("step %d: monitor mean score %.4f, flagged %.3f; spillover %.3f", step, point.mean_score,
                 point.flag_rate, point.spillover)
        if self.log_fn is not None:
            self.log_fn({"monitor/mean_score": point.mean_score, "monitor/flag_rate": point.flag_rate,
                         "spillover": point.spillover}, step)
        return point

    def curve(self) -> dict[str, list]:
        return {k: [getattr(p, k) for p in self.points] for k in ("step", "mean_score", "flag_rate", "spillover")}


def pearson_with_interval(x: Sequence[float], y: Sequence[float], level: float = 0.95, n_bootstrap: int = 2000,
                          seed: int = 0) -> dict[str, Any]:
    """Pearson r with a Fisher-z interval and a percentile bootstrap interval over the (x, y) pairs.

    Both treat the points as independent; points along one training run are not, so read them as rough."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": None, "fisher_ci95": None, "bootstrap_ci95": None, "n_points": n,
                "note": "needs >= 4 points and variation in both series"}
    r = float(stats.pearsonr(x, y).statistic)
    z, half = np.arctanh(np.clip(r, -0.999999, 0.999999)), stats.norm.ppf((1 + level) / 2) / math.sqrt(n - 3)

    def pearson(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        a, b = a - a.mean(axis, keepdims=True), b - b.mean(axis, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample without variation has no r: nan
            return (a * b).sum(axis) / np.sqrt((a * a).sum(axis) * (b * b).sum(axis))

    lo, hi = bootstrap_ci((x, y), pearson, level, n_bootstrap, seed, paired=True)
    return {"r": r, "fisher_ci95": [float(np.tanh(z - half)), float(np.tanh(z + half))],
            "bootstrap_ci95": [lo, hi] if np.isfinite([lo, hi]).all() else None, "n_points": n,
            "p_value": float(stats.pearsonr(x, y).pvalue)}


def plot_curve(curve: dict[str, list], threshold: float, path: str | Path, title: str,
               control: dict[str, list] | None = None) -> None:
    """PNG of the monitor's mean score (left axis) and the spillover rate (right axis) over fine-tuning steps;
    solid: the insecure fine-tune; dashed: the secure fine-tune (control) when given."""
    fig = Figure(figsize=(8.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    ax2 = ax.twinx()
    handles = []
    for run, style, name in ((curve, "-", "insecure"), (control, "--", "secure")):
        if run is None:
            continue
        steps = run.get("steps", run.get("step"))
        handles += ax.plot(steps, run["mean_score"], style + "o", color="C0", ms=4,
                           label=f"monitor mean score, {name} fine-tune")
        handles += ax2.plot(steps, run["spillover"], style + "s", color="C3", ms=4,
                            label=f"spillover rate, {name} fine-tune")
    handles.append(ax.axhline(threshold, color="C0", lw=0.9, ls=":", label=f"monitor threshold ({threshold:.3g})"))
    ax.set_xlabel("fine-tuning step (from the base model)")
    ax.set_ylabel("mean projection on the EM direction (probe set)", color="C0")
    ax.tick_params(axis="y", colors="C0")
    ax2.set_ylabel("code spillover rate (held-out questions)", color="C3")
    ax2.tick_params(axis="y", colors="C3")
    top = max([*curve["spillover"], *(control["spillover"] if control else [])])
    ax2.set_ylim(-0.02, max(0.1, top * 1.15))
    fig.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="outside lower center", ncol=3)
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)
