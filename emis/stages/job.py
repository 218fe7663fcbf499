"""One experiment job: its output directory, resuming a completed point, W&B tracking, metrics.json, one-line errors.

Every entry point in experiments/ is `run_job(cfg, <stage function>)`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from emis.io import ArtifactError, atomic_write_json, code_fingerprint, content_hash, same_code
from emis.judges.llm import JudgeError
from emis.tracking import redact, track

log = logging.getLogger(__name__)
Stage = Callable[[DictConfig, Path], dict[str, Any]]
# Errors that mean "bad input or environment": reported in one line with exit code 2, never a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, ArtifactError, ConnectionError, TimeoutError, JudgeError)
EXIT_USER_ERROR = 2
# The code behind a job's metrics: any stage runs through most of emis, so all of it (modules and data files).
JOB_CODE = ("emis",)


def config_key(cfg: DictConfig) -> str:
    """sha256 of the resolved config without Hydra's own section and the logger: what determines the results."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for volatile in ("hydra", "logger"):
        data.pop(volatile, None)
    return content_hash(data)


def completed(out: Path, key: str, code: str) -> dict[str, Any] | None:
    """The metrics of a job finished in `out` with this config key and by this code (fingerprint), if any; one of
    other code is run again, and the log says so."""
    path = out / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if metrics.get("config_key") != key or not same_code(f"finished job {path}", metrics.get("code"), code):
        return None
    return metrics


def _series(tracker: Any, metrics: dict[str, Any]) -> None:
    """Metrics by α (steering) as W&B lines."""
    for name in ("spillover", "coherence"):
        by_alpha = metrics.get(name)
        if isinstance(by_alpha, dict) and "alphas" in metrics:
            tracker.log_series(f"{name}_by_alpha", metrics["alphas"], [by_alpha[f"{a:g}"] for a in metrics["alphas"]], "alpha")


def _log_outputs(tracker: Any, out: Path, metrics: dict[str, Any], experiment: str) -> None:
    """Summary metrics, series, the generations table, every PNG and the report."""
    tracker.log_metrics(metrics)
    _series(tracker, metrics)
    for table in sorted(out.rglob("generations.jsonl")):
        rows = [json.loads(line) for line in table.read_text().splitlines()]
        tracker.log_table(f"generations/{table.parent.relative_to(out)}".rstrip("/."), rows)
    tracker.log_images({str(p.relative_to(out).with_suffix("")): p for p in sorted(out.rglob("*.png")) if "wandb" not in p.parts})
    if (out / "report.md").exists():
        tracker.log_artifact(out / "report.md", f"{experiment}-report", "report")


def run_job(cfg: DictConfig, stage: Stage) -> dict[str, Any] | None:
    """Run `stage` into the Hydra output directory unless a job with the same config already completed there."""
    out = Path(HydraConfig.get().runtime.output_dir)
    key, code = config_key(cfg), code_fingerprint(*JOB_CODE)
    done = completed(out, key, code)
    if done is not None:
        log.info("%s: already complete for this config in %s; skipping", cfg.experiment, out)
        return done
    try:
        with track(cfg, cfg.experiment, out) as tracker:
            metrics = redact(stage(cfg, out))
            metrics["config_key"], metrics["code"] = key, code
            atomic_write_json(out / "metrics.json", metrics)
            _log_outputs(tracker, out, metrics, cfg.experiment)
    except USER_ERRORS as err:
        log.error("%s", redact(_one_line(err)))
        sys.exit(EXIT_USER_ERROR)
    log.info("%s: metrics in %s", cfg.experiment, out / "metrics.json")
    return metrics


def _one_line(err: BaseException) -> str:
    """`<Type>: <first line of the message>`."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else 'no message'}"
