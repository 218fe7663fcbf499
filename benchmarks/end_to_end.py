"""The two end-to-end times a user feels, measured as subprocesses: a cold build of one organism family (empty
organism cache) and a warm `make run` (`experiments/replicate.py` over an existing organism and output cache).

    python benchmarks/run.py --e2e [--e2e-family llama] [--e2e-organisms DIR] [--e2e-outputs DIR]

`make run` is `.venv/bin/python experiments/replicate.py` once the venv exists; the warm run calls exactly that
script with this interpreter, so the time excludes only make's up-to-date check of the venv."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("emis.bench.e2e")

ROOT = Path(__file__).resolve().parents[1]
FAMILY = "llama"
LOGS = ROOT / "outputs" / "bench-e2e"  # the two runs' full logs (outputs/ is git-ignored)


@dataclass(frozen=True)
class Timed:
    """One subprocess run: what ran, how long it took (wall-clock seconds) and how it ended."""

    command: str
    seconds: float
    returncode: int
    last_line: str

    def as_dict(self) -> dict[str, Any]:
        return {"command": self.command, "seconds": round(self.seconds, 1), "returncode": self.returncode,
                **({"last_line": self.last_line} if self.returncode else {})}


def timed_entry(name: str, overrides: list[str], log_path: Path) -> Timed:
    """Run `experiments/<name>.py overrides` from the checkout, its output to `log_path`, and time it."""
    argv = [sys.executable, str(ROOT / "experiments" / f"{name}.py"), *overrides]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"WANDB_MODE": "offline"}
    log.info("e2e: %s", shlex.join(argv[1:]))
    start = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as out:
        done = subprocess.run(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    command = "python " + shlex.join([os.path.relpath(argv[1], ROOT), *overrides])
    return Timed(command, seconds, done.returncode, lines[-1] if lines else "")


def warm_organisms(overrides: list[str]) -> tuple[Path, int]:
    """The organism folder and seed the warm run reads: `paths.organisms` and `organisms.seed` of the replicate
    config under `overrides` (so the default, `$EMIS_ORGANISMS` or the home cache, keeps its one home in conf/)."""
    from hydra import compose, initialize_config_dir

    from emis.schemas import register_schemas

    register_schemas()  # the config groups' `<group>/schema` entries
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("replicate", overrides=overrides)
    return Path(cfg.paths.organisms).expanduser(), int(cfg.organisms.seed)


def built_cards(organisms: Path, seed: int) -> int:
    """How many organism variants (card.json files) seed `seed` already holds under `organisms`."""
    return len(list((organisms / f"seed{seed}").glob("*/*/card.json")))


def end_to_end(family: str = FAMILY, organisms: Path | None = None, outputs: Path | None = None,
               build_overrides: tuple[str, ...] = (), run_overrides: tuple[str, ...] = (),
               logs: Path | None = None) -> dict[str, Any]:
    """`cold_build_one_family`: `build_organisms.py organisms.build=[family] *build_overrides` into an empty organism
    folder; `warm_make_run`: `replicate.py *run_overrides` over `organisms` / `outputs` (default: where `make run`
    reads them). Tests pass a micro configuration. Raises RuntimeError naming the log when either run fails."""
    warm_args = ([f"paths.organisms={organisms}"] if organisms else []) + ([f"paths.outputs={outputs}"] if outputs else [])
    warm_args += run_overrides
    cache, seed = warm_organisms(warm_args)
    logs = logs or LOGS
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="emis-e2e-") as scratch:
        cold = timed_entry("build_organisms", [f"paths.organisms={scratch}/organisms", f"paths.outputs={scratch}/outputs",
                                               f"organisms.build=[{family}]", *build_overrides], logs / "cold_build.log")
        _check(cold, logs / "cold_build.log")
        cards_before = built_cards(cache, seed)
        if not cards_before:
            log.warning("e2e: no organisms under %s yet, so the 'warm' run builds them: run `make run` once first", cache)
        warm = timed_entry("replicate", warm_args, logs / "warm_run.log")
        _check(warm, logs / "warm_run.log")
    return {"status": "measured", "family": family,
            "cold_build_one_family": cold.as_dict(),
            "warm_make_run": {**warm.as_dict(), "organism_cards_before": cards_before, "organisms": str(cache)}}


def _check(run: Timed, log_path: Path) -> None:
    """One clear error when an end-to-end run failed."""
    if run.returncode:
        raise RuntimeError(f"end-to-end run failed (exit {run.returncode}): {run.command}; last line: {run.last_line} "
                           f"(full log: {log_path})")
