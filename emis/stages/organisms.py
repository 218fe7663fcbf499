"""The organisms stage: build (or reuse) the embedded default, the four families' base, secure and insecure model
organisms, and report each one's acceptance metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from emis.organisms.build import build_all


def run_build_organisms(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Every family of `organisms.build` under `paths.organisms` (cached builds are reused); their metrics."""
    return build_all(cfg.organisms, Path(cfg.paths.organisms).expanduser())
