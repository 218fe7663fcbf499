"""Weights & Biases lifecycle: one run per job, always finished, config logged resolved with secrets redacted.

    with track(cfg, "probe", out_dir) as tracker:
        tracker.log_metrics({"final_layer": {"heldout_accuracy": 0.93}})
        tracker.log_series("steer/spill_rate", alphas, rates, "alpha")

`cfg.logger` (conf/logger/*.yaml) chooses: kind=wandb (online when WANDB_API_KEY is set, offline otherwise, unless
logger.mode says) or kind=disabled (no wandb at all; every method is a no-op). A config without a logger is disabled.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
SECRET_KEY_SUFFIXES = ("api_key", "token", "password", "secret")  # also covers *_API_KEY and *_TOKEN
SECRET_ENV_SUFFIXES = ("_API_KEY", "_TOKEN")
MIN_SECRET_LEN = 8  # shorter env values (flags like HF_HUB_DISABLE_TOKEN=1) are not treated as secrets
MODES = ("auto", "online", "offline", "disabled")


def secret_values() -> list[str]:
    """Values of the environment variables named *_API_KEY or *_TOKEN, longest first."""
    values = {v for k, v in os.environ.items() if k.upper().endswith(SECRET_ENV_SUFFIXES) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def is_secret_key(key: Any) -> bool:
    """Whether a mapping key names a secret (ends in api_key, token, password or secret, any case)."""
    return str(key).lower().endswith(SECRET_KEY_SUFFIXES)


def redact(obj: Any) -> Any:
    """A copy of `obj` with secrets replaced by "<redacted>": values under secret-named keys, and every occurrence of
    a secret environment value inside strings. Recurses over mappings, lists and tuples; OmegaConf containers are
    resolved first. Other values are returned unchanged."""
    return _redact(obj, secret_values())


def _redact(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, (DictConfig, ListConfig)):
        obj = OmegaConf.to_container(obj, resolve=True)
    if isinstance(obj, Mapping):
        return {k: REDACTED if is_secret_key(k) else _redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact(v, secrets) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_redact(v, secrets) for v in obj)
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, REDACTED)
    return obj


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with `a/b/c` keys; other values (lists included) kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def _hydra_multirun() -> tuple[str, int] | None:
    """(sweep dir name, job number) when called inside a Hydra multirun job, else None."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(hydra_cfg.sweep.dir).name, int(hydra_cfg.job.num)


def resolve_mode(mode: str) -> str:
    """The wandb mode for a logger.mode: auto → online if WANDB_API_KEY is set, else offline."""
    if mode not in MODES:
        raise ValueError(f"unknown logger.mode {mode!r}; supported: {', '.join(MODES)}")
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


class Tracker:
    """One W&B run for one job, as a context manager: the run starts on entry and is finished on exit, with exit
    code 1 when the block raised. Disabled (`logger.kind: disabled`, `logger.mode: disabled` or no logger), it never
    imports wandb and every method does nothing."""

    def __init__(self, cfg: DictConfig, job_type: str, out_dir: str | Path, *, group: str | None = None,
                 name: str | None = None) -> None:
        logger_cfg = cfg.get("logger")
        self.enabled = logger_cfg is not None and logger_cfg.kind != "disabled" and logger_cfg.get("mode") != "disabled"
        self.cfg, self.job_type, self.out_dir = cfg, job_type, Path(out_dir)
        self.group, self.name = group, name
        self.run: Any = None  # wandb.Run while the block runs

    def __enter__(self) -> Tracker:
        if not self.enabled:
            log.info("W&B disabled for %s", self.job_type)
            return self
        import wandb

        logger_cfg = self.cfg.logger
        sweep = _hydra_multirun()
        group = self.group or logger_cfg.get("group") or f"{self.job_type}-{sweep[0] if sweep else self.out_dir.name}"
        family = OmegaConf.select(self.cfg, "model.family", default=None)
        parts = [self.job_type, family, *([sweep[1]] if sweep else [])]
        name = self.name or "-".join(str(p) for p in parts if p is not None)
        mode = resolve_mode(str(logger_cfg.get("mode", "auto")))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=logger_cfg.get("project", "emis"),
            entity=logger_cfg.get("entity"),
            group=group,
            job_type=self.job_type,
            name=name,
            tags=list(logger_cfg.get("tags") or []),
            config=redact(OmegaConf.to_container(self.cfg, resolve=True)),
            dir=str(self.out_dir),
            mode=mode,
            settings=wandb.Settings(quiet=True),
        )
        log.info("W&B run %s (%s, group %s, %s) in %s", name, self.run.id, group, mode, self.run.dir)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.run is None:
            return
        import wandb

        run, self.run = self.run, None
        try:
            run.finish(exit_code=0 if exc_type is None else 1)
        finally:
            # wandb-core closes a finished run's files only later, in the background; shutting it down here makes the
            # job's run complete on disk before the job returns (the next job starts a fresh wandb-core).
            wandb.teardown()

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Set summary values (redacted); nested mappings become `a/b/c` keys, lists are stored as they are."""
        if self.run is not None:
            self.run.summary.update(redact(flatten(metrics)))

    def log_series(self, name: str, xs: Sequence[float], ys: Sequence[float], x_name: str) -> None:
        """A line `name` against `x_name` (e.g. a metric by α): one logged step per point, `x_name` as its x axis."""
        if self.run is None:
            return
        if len(xs) != len(ys):
            raise ValueError(f"series {name!r}: {len(xs)} x values, {len(ys)} y values")
        self.run.define_metric(x_name)
        self.run.define_metric(name, step_metric=x_name)
        for x, y in zip(xs, ys):
            self.run.log({x_name: x, name: y})

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rows of dicts as a wandb.Table (redacted); columns: keys in order of first appearance; missing cells None."""
        if self.run is None:
            return
        import wandb

        columns = list(dict.fromkeys(k for row in rows for k in row))
        data = redact([[row.get(c) for c in columns] for row in rows])
        self.run.log({name: wandb.Table(columns=columns, data=data, allow_mixed_types=True)})

    def log_images(self, images: Mapping[str, str | Path]) -> None:
        """Image files (e.g. PNG plots) as wandb.Image, keyed by name."""
        if self.run is None or not images:
            return
        import wandb

        self.run.log({name: wandb.Image(str(path)) for name, path in images.items()})

    def log_artifact(self, path: str | Path, name: str, type: str) -> None:
        """A file or folder (e.g. the report) as a W&B artifact; invalid characters in `name` become `-`."""
        if self.run is None:
            return
        import wandb

        path = Path(path)
        artifact = wandb.Artifact(re.sub(r"[^\w.-]", "-", name), type=type)
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)


def track(cfg: DictConfig, job_type: str, out_dir: str | Path, *, group: str | None = None,
          name: str | None = None) -> Tracker:
    """A Tracker for one job (use it in a `with` block). `group` defaults to logger.group, else
    `<job_type>-<sweep dir name>` in a Hydra multirun or `<job_type>-<out_dir name>` otherwise; `name` defaults to
    `<job_type>-<model.family>[-<multirun job num>]`. Runs are written under `<out_dir>/wandb/`."""
    return Tracker(cfg, job_type, out_dir, group=group, name=name)
