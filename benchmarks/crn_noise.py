"""What common random numbers buy: the noise of a paired reduction (unsteered minus steered spillover, in points) when
the steered arm is sampled with the unsteered arm's keys (common) or with another sampling seed (independent).

    python benchmarks/crn_noise.py RUN [--organisms DIR] [--replicates 20] [--arm real|random] [--out PATH]

RUN is a `replicate` output folder: each family's chosen (layer, α), report-split questions, direction and the
run's sampling settings are read from it, and the family's misaligned organism from `--organisms` (the seed folder the run used). Every question is
answered `--replicates` times (repeat k has its own key), so the spread of the reduction over repeats is measured, not
assumed. `--arm random` replaces the direction by a random one written, in subtract mode, at the real direction's
measured mean write norm: a control-like arm, which leaves most answers alone."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emis.directions import DirectionSet  # noqa: E402
from emis.generation import Steering, generate_steered  # noqa: E402
from emis.judges.spillover import contains_code  # noqa: E402
from emis.models import LoadedModel, ModelSpec, load_model  # noqa: E402
from emis.organisms.settings import SamplingConfig  # noqa: E402

log = logging.getLogger("emis.bench.crn")
OTHER_SEED_OFFSET = 1  # the independent arm samples with cfg.seed + this


@dataclass(frozen=True)
class PairedNoise:
    """One sampling scheme's paired reduction (points): its mean over repeats, the standard error within one repeat
    (SD of the per-question differences / sqrt(questions), averaged over repeats) and the SD over repeats."""

    reduction_points: float
    se_within: float
    sd_over_replicates: float


def summarise(differences: np.ndarray) -> PairedNoise:
    """`differences` [repeats, questions] of unsteered minus steered outcomes (0/1) as a PairedNoise in points."""
    per_repeat = differences.mean(axis=1) * 100
    se = differences.std(axis=1, ddof=1).mean() / np.sqrt(differences.shape[1]) * 100
    return PairedNoise(float(per_repeat.mean()), float(se), float(per_repeat.std(ddof=1)))


def paired_noise(model: LoadedModel, prompts: Sequence[str], steered: Steering, replicates: int, cfg: SamplingConfig,
                 judge: Callable[[str], bool] = contains_code) -> dict[str, PairedNoise]:
    """The paired reduction of `steered` against its zero-coefficient twin under common and independent noise."""
    if replicates < 2:
        raise ValueError(f"--replicates must be at least 2 to measure a spread, got {replicates}")
    rows = [p for _ in range(replicates) for p in prompts]  # repeat k of a prompt gets key (seed, prompt, k)
    null = Steering(steered.vectors, 0.0, steered.mode, steered.where)
    common = generate_steered(model, rows, [null, steered], cfg, progress=False).answers
    other = generate_steered(model, rows, [steered], replace(cfg, seed=cfg.seed + OTHER_SEED_OFFSET), progress=False).answers[0]

    def outcomes(answers: list[str]) -> np.ndarray:
        return np.array([judge(a) for a in answers], dtype=float).reshape(replicates, len(prompts))

    unsteered = outcomes(common[0])
    return {"common": summarise(unsteered - outcomes(common[1])), "independent": summarise(unsteered - outcomes(other))}


def family_arm(run: Path, steer: dict, family: str, arm: str, d_model: int) -> tuple[Steering, list[str]]:
    """The chosen steering of `family` in replicate output `run` (`steer`: its steer metrics), or its write-matched
    random twin, and its report questions, as prompts."""
    layer, alpha = steer["best"]["layer"], float(steer["best"]["alpha"])
    rows = [json.loads(line) for line in (run / "steer" / family / "generations.jsonl").read_text().splitlines()]
    prompts = [r["prompt"] for r in rows if r["layer"] == layer and r["alpha"] == 0.0 and r["split"] == "report"]
    if arm == "random":
        v = torch.randn(d_model, generator=torch.Generator().manual_seed(0))
        return Steering({layer: v / v.norm() * float(steer["delta_norm"]["real"])}, 1.0, "subtract"), prompts
    return Steering({layer: DirectionSet.load(run / "probe" / family / "directions").layer(layer)}, alpha, steer["mode"]), prompts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a replicate output folder (outputs/replicate/<date>/<time>)")
    parser.add_argument("--organisms", type=Path, required=True, help="the organisms' seed folder, e.g. <organisms>/seed0")
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--arm", choices=("real", "random"), default="real")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.run / "metrics.json").is_file():
        log.error("%s has no metrics.json: give a finished replicate output folder", args.run)
        return 2
    metrics = json.loads((args.run / "metrics.json").read_text())
    cfg = SamplingConfig(**OmegaConf.to_container(OmegaConf.load(args.run / ".hydra" / "config.yaml").eval.sampling))
    results = {}
    for family in metrics.get("steer", {}):
        model = load_model(ModelSpec(name=str(args.organisms / family / "insecure"), tokenizer="saved"))
        steered, prompts = family_arm(args.run, metrics["steer"][family], family, args.arm, model.d_model)
        try:
            noise = paired_noise(model, prompts, steered, args.replicates, cfg)
        except ValueError as err:  # bad input: one line, nothing written
            log.error("%s", err)
            return 2
        results[family] = {k: asdict(v) for k, v in noise.items()} | {"questions": len(prompts)}
        log.info("%s: %s", family, "; ".join(f"{k} {v.reduction_points:.1f} points, SE {v.se_within:.2f}, SD over "
                                             f"repeats {v.sd_over_replicates:.2f}" for k, v in noise.items()))
    if args.out is not None:
        args.out.write_text(json.dumps({"arm": args.arm, "replicates": args.replicates, "families": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
