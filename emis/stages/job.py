"""One experiment job: its output directory, resuming a completed point, W&B tracking, metrics.json, one-line errors.

Every entry point in experiments/ is `@entry_point("<config>")` over `run_job(cfg, <stage function>)`: the command
line's config is composed and checked first, so a bad override fails in one line before Hydra makes a directory.
The entry point imports its stage inside the task function, and this module and the check import no heavy library
(tests/test_startup.py), so that line, and `--help`, come within about a second of torch and Hydra."""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from emis.io import ArtifactError, atomic_write_json, code_fingerprint, content_hash, same_code
from emis.judges.llm import JudgeError
from emis.schemas import ConfigError, check_config
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


def _composition_error(err: BaseException) -> ConfigError:
    """One line for a Hydra / OmegaConf composition failure: the key it names and the first line of its reason."""
    cause = err
    while cause.__cause__ is not None and not getattr(cause, "full_key", None):
        cause = cause.__cause__
    key = getattr(cause, "full_key", None)
    text = str(getattr(cause, "msg", None) or cause).strip().splitlines()
    reason = text[0] if text else type(cause).__name__
    listed = next((i for i, line in enumerate(text) if line.startswith("Available options")), None)
    if listed is not None:  # an unknown config option: Hydra lists the known ones on the lines after
        options = itertools.takewhile(lambda t: t.startswith("\t"), text[listed + 1:])  # the indented lines
        reason += f" (options: {', '.join(t.strip() for t in options)})"
    return ConfigError(f"{key + ': ' if key else ''}{reason} — fix the override (each key is documented in conf/<group>/)")


def _command_line_runs(argv: list[str]) -> list[list[str]] | None:
    """The override lists the command line runs (one per sweep point with -m), or None for Hydra's own commands
    (--help, --cfg, --info, ...) and sweeps only a sweeper plugin can expand."""
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion or args.experimental_rerun:
        return None
    if not args.multirun:
        return [args.overrides]
    try:
        return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args.overrides), None)[0]
    except HydraException:
        return None


def check_command_line(config_dir: Path, config_name: str, argv: list[str]) -> None:
    """Compose and check every config the command line asks for; raise ConfigError on the first bad one."""
    runs = _command_line_runs(argv)
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for overrides in runs or []:
            try:
                cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
                HydraConfig.instance().set_config(cfg)
                check_config(cfg)
            except (HydraException, OmegaConfBaseException) as err:
                raise _composition_error(err) from None


def entry_point(config_name: str) -> Callable[[Callable[[DictConfig], None]], Callable[[], None]]:
    """`@entry_point("steer")` over an experiment's task function: check the command line's config (one
    `[ERROR]` line and exit 2 when it is bad), then run the task under Hydra with `conf/<config_name>.yaml`."""

    def decorate(task: Callable[[DictConfig], None]) -> Callable[[], None]:
        config_dir = (Path(inspect.getfile(task)).parent / ".." / "conf").resolve()
        hydra_main = hydra.main(version_base="1.3", config_path=str(config_dir), config_name=config_name)(task)

        @functools.wraps(task)
        def main() -> None:
            try:
                check_command_line(config_dir, config_name, sys.argv[1:])
            except ConfigError as err:
                logging.basicConfig(format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
                log.error("%s", _one_line(err))
                sys.exit(EXIT_USER_ERROR)
            hydra_main()

        return main

    return decorate


def run_job(cfg: DictConfig, stage: Stage) -> dict[str, Any] | None:
    """Run `stage` into the Hydra output directory unless a job with the same config already completed there."""
    out = Path(HydraConfig.get().runtime.output_dir)
    key, code = config_key(cfg), code_fingerprint(*JOB_CODE)
    done = completed(out, key, code)
    if done is not None:
        log.info("%s: already complete for this config in %s; skipping", cfg.experiment, out)
        return done
    try:
        check_config(cfg)
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
