"""report.md for a replication: separation, steering and transfer tables, rankings, and the study's numbers beside ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emis.io import atomic_file

# The study's headline numbers (../shared/docs/STUDY.md), restated.
STUDY = {
    "separation": "a final-layer difference-in-means direction separates misaligned from aligned activations at 99.6%",
    "steering": "subtracting the direction cuts code spillover by 21-51 points, beyond random, orthogonal and wrong-layer controls",
    "transfer": "ridge-mapped directions suppress by up to 46 points, but mapped controls do as well (non-specific)",
    "topology": "Gemma and Qwen act as donors, Llama as a receiver",
}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(lo_hi: list[float], scale: float = 1.0, digits: int = 1) -> str:
    return f"[{lo_hi[0] * scale:.{digits}f}, {lo_hi[1] * scale:.{digits}f}]"


def separation_table(probe: dict[str, dict[str, Any]]) -> list[str]:
    """Final and best layer of the EM contrast, with the control contrast's final layer beside it."""
    rows = ["| model | final-layer accuracy [95% CI] | AUROC | max over layers (layer; a maximum, not a held-out estimate) | "
            "control final-layer accuracy |",
            "|---|---|---|---|---|"]
    for name, m in probe.items():
        f, c = m["final_layer"], m["control"].get("final_layer")
        best = max(range(len(m["layers"])), key=lambda i: m["heldout_accuracy"][i])
        control = (f"{c['heldout_accuracy']:.3f} {_ci(c['heldout_accuracy_ci95'], digits=3)}" if c
                   else f"absent: {m['control']['absent']}")
        rows.append(f"| {name} | {f['heldout_accuracy']:.3f} {_ci(f['heldout_accuracy_ci95'], digits=3)} | {f['auroc']:.3f} | "
                    f"{m['layers'][best]} ({m['heldout_accuracy'][best]:.3f}) | {control} |")
    return rows


def _p(values: dict[str, float]) -> str:
    return ", ".join(f"{fam} {p:.3f}" for fam, p in values.items())


def _tiers(v: dict[str, bool | None]) -> str:
    names = {"direction_specific": "direction", "em_specific": "EM", "layer_localised": "layer"}
    return ", ".join(f"{names[k]} {'yes' if ok else 'no'}" for k, ok in v.items() if ok is not None)


def _writes(delta: dict[str, Any]) -> str:
    medians = {fam: sorted(w)[len(w) // 2] for fam, w in delta["controls"].items() if w}
    return f"{delta['real']:.2f} (controls: " + ", ".join(f"{fam} {w:.2f}" for fam, w in medians.items()) + ")"


def steering_table(steer: dict[str, dict[str, Any]]) -> list[str]:
    """On the report split: spillover before/after at the (layer, α) chosen on the selection split, the reduction
    with its interval, coherence, Holm-adjusted p-values per control family, tiered verdicts and write norms."""
    rows = ["| model | layer | α | spillover before → after | reduction (points) [95% CI] | coherence before → after | "
            "Holm p per control family | tiers | verdict | write norm (median of controls) | max control cosine |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in steer.items():
        b = m["best"]
        cos = max(abs(c) for fam in m["controls"].values() for c in fam.get("cosine_to_real", [0.0]))
        rows.append(f"| {name} | {b['layer']} | {b['alpha']:g} | {_pct(m['unsteered_spillover'])} → {_pct(b['spillover'])} | "
                    f"{m['reduction_points']:.1f} {_ci(m['ci95'])} | {m['coherence']['0']:.2f} → {b['coherence']:.2f} | {_p(m['p_holm'])} | "
                    f"{_tiers(m['verdicts'])} | {m['verdict']} | {_writes(m['delta_norm'])} | {cos:.2f} |")
    absent = [f"{name}: control family {fam} absent: {why}." for name, m in steer.items()
              for fam, why in m.get("absent_controls", {}).items()]
    rows += [""] + absent if absent else []
    n = next(iter(steer.values()))["selection"] if steer else None
    if n:
        rows += ["", f"(layer, α) chosen on {n['n_select']} questions, every number measured on the other {n['n_report']} "
                     f"(split seed {n['seed']})."]
    return rows


def transfer_table(transfer: dict[str, Any]) -> list[str]:
    """Every ordered pair on the receiver's report split: R², reduction with interval, Holm p-values, verdict."""
    rows = ["| donor → receiver | R² | cosine to native | α | reduction (points) [95% CI] | Holm p per control family | "
            "verdict | write norm (median of controls) |", "|---|---|---|---|---|---|---|---|"]
    for p in transfer["pairs"]:
        rows.append(f"| {p['donor']} → {p['receiver']} | {p['r2']:.3f} | {p['cosine_to_native']:.2f} | {p['alpha']:g} | "
                    f"{p['reduction_points']:.1f} {_ci(p['ci95'])} | {_p(p['p_holm'])} | {p['verdict']} | {_writes(p['delta_norm'])} |")
    return rows


def ranking_lines(transfer: dict[str, Any]) -> list[str]:
    """Donor and receiver scores (mean reduction in points), best first, and the native reference."""
    ds, rs = transfer["donor_score"], transfer["receiver_score"]
    return [
        "Donor score (mean reduction its direction brings to the others): "
        + ", ".join(f"{n} {ds[n]:.1f}" for n in transfer["donor_ranking"]),
        "",
        "Receiver score (mean reduction the others' directions bring to it): "
        + ", ".join(f"{n} {rs[n]:.1f}" for n in transfer["receiver_ranking"]),
        "",
        "Native within-model reduction at the transfer layer (report split): "
        + ", ".join(f"{n} {v['reduction_points']:.1f} (layer {v['layer']}, α {v['alpha']:g})" for n, v in transfer["native"].items()),
    ]


def native_vs_steering_lines(steer: dict[str, dict[str, Any]], transfer: dict[str, Any]) -> list[str]:
    """Per model whose transfer-stage native reduction differs from the steering stage's: the layer, α and questions
    of each, which is why (the transfer stage steers at `transfer.layer` over `transfer.alphas` on its own questions)."""
    lines = []
    for name, native in transfer["native"].items():
        m = steer.get(name)
        if m is None or abs(m["reduction_points"] - native["reduction_points"]) < 0.05:
            continue
        lines.append(f"- {name}: steering stage {m['reduction_points']:.1f} points at layer {m['best']['layer']}, "
                     f"α {m['best']['alpha']:g} (chosen over layers {m['layers']} × α {m['alphas']}) on "
                     f"{m['selection']['n_report']} report questions; transfer stage {native['reduction_points']:.1f} at "
                     f"layer {native['layer']}, α {native['alpha']:g} on {native['selection']['n_report']} report questions.")
    return (["Where the two stages' native reductions differ, they steered at another layer or α, or on other questions:", "",
             *lines] if lines else [])


def comparison_lines(probe: dict, steer: dict, transfer: dict) -> list[str]:
    """The study's claims next to what this run measured, in one line each."""
    finals = [m["final_layer"]["heldout_accuracy"] for m in probe.values()]
    reductions = [m["reduction_points"] for m in steer.values()]
    specific = [n for n, m in steer.items() if m["verdict"] == "specific"]
    pairs = transfer["pairs"]
    cross_specific = sum(p["verdict"] == "specific" for p in pairs)
    return [
        f"- Detection. Study: {STUDY['separation']}. Here: final-layer held-out accuracy "
        f"{min(finals):.3f}-{max(finals):.3f} across models.",
        f"- Mitigation. Study: {STUDY['steering']}. Here: best within-model reductions {min(reductions):.1f}-"
        f"{max(reductions):.1f} points; specific in {len(specific)} of {len(steer)} models ({', '.join(specific) or 'none'}).",
        f"- Transfer. Study: {STUDY['transfer']}. Here: up to {max(p['reduction_points'] for p in pairs):.1f} points; "
        f"{cross_specific} of {len(pairs)} pairs specific.",
        f"- Topology. Study: {STUDY['topology']}. Here: donors ranked {', '.join(transfer['donor_ranking'])}; "
        f"receivers ranked {', '.join(transfer['receiver_ranking'])}.",
        "- The organisms are tiny models trained here, not the study's checkpoints: compare directions of effects, "
        "not magnitudes.",
    ]


def write_report(path: Path, metrics: dict[str, Any], figures: dict[str, str]) -> None:
    """report.md from the replication metrics; `figures` maps a caption to a PNG path relative to the report."""
    probe, steer, transfer = metrics["probe"], metrics["steer"], metrics["transfer"]
    lines = ["# emis replication report", "",
             "Every number below is in `metrics.json`. Steering and transfer: (layer, α) is chosen on a selection split of the "
             "questions and every effect is measured on the report split; intervals are paired BCa bootstrap 95% intervals "
             "over question clusters; p-values are empirical and one-sided against write-matched control families, "
             "Holm-adjusted within each verdict tier. Separation intervals are percentile-bootstrap 95% intervals.", "",
             "## Separation (difference-in-means direction, held-out split)", "", *separation_table(probe), "",
             "## Within-model steering against matched controls", "", *steering_table(steer), "",
             "## Transfer matrix", "", *transfer_table(transfer), "", *ranking_lines(transfer), "",
             *native_vs_steering_lines(steer, transfer), "",
             "## Against the study", "", *comparison_lines(probe, steer, transfer), "", "## Figures", ""]
    lines += [f"![{caption}]({png})" for caption, png in figures.items()]
    with atomic_file(path) as f:
        f.write("\n".join(lines) + "\n")
