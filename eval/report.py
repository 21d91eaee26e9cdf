"""Tables and plots: one xm3600 result as a chart, several runs compared in one table and one figure."""

import json
from pathlib import Path

from matplotlib.figure import Figure  # the object API draws to files without a display or pyplot state

from eval.xm3600 import PROTOCOLS

KEYS = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")


def plot_recall(result: dict, path: str | Path) -> None:
    """Grouped bars of recall per language (and the mean), one panel per protocol."""
    singles = [result[p] for p in PROTOCOLS if p in result] or [result]
    figure = Figure(figsize=(10, 3.6 * len(singles)))
    axes = figure.subplots(len(singles), 1, squeeze=False)
    for axis, single in zip(axes[:, 0], singles, strict=True):
        rows = {**single["languages"], "mean": single["mean"]}
        width = 0.8 / len(KEYS)
        for k, key in enumerate(KEYS):
            axis.bar([i + k * width for i in range(len(rows))], [row[key] for row in rows.values()], width,
                     label=key.replace("t2i_r", "T→I R@").replace("i2t_r", "I→T R@"))
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], list(rows))
        axis.set_ylabel("recall (%)")
        axis.set_ylim(0, 1.25 * max(max(row.values()) for row in rows.values()) + 0.1)  # room for the legend
        axis.set_title(f"{single['model']}: {single['protocol']} protocol, {single['images']} images")
        axis.legend(ncols=6, fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def collect_run(run_dir: Path) -> dict:
    """A run's training curve (metrics.jsonl) and its recall: saved xm3600 JSON, else the last validation."""
    run = {"name": run_dir.name, "path": str(run_dir), "curve": [], "recall": None, "source": None}
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if "loss" in row:
                run["curve"].append((row["step"], row["loss"]))
            if "val" in row:
                run["recall"], run["source"] = row["val"], "validation during training"
    for path in sorted(run_dir.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        single = data.get("all-captions", data) if isinstance(data, dict) else None
        if isinstance(single, dict) and "mean" in single and "languages" in single:
            run["recall"], run["source"] = single["mean"], f"{path.name} ({single.get('protocol', '?')})"
    if run["recall"] is None and not run["curve"]:
        raise FileNotFoundError(f"{run_dir} has neither metrics.jsonl nor an xm3600 JSON result")
    return run


def report_markdown(runs: list[dict]) -> str:
    """One row per run: mean recall over languages (percent) and where it came from."""
    lines = ["| run | " + " | ".join(KEYS) + " | final loss | source |", "|---|" + "---|" * (len(KEYS) + 2)]
    for run in runs:
        recall = run["recall"] or {}
        cells = [f"{recall[k]:.2f}" if k in recall else "-" for k in KEYS]
        loss = f"{run['curve'][-1][1]:.3f}" if run["curve"] else "-"
        lines.append(f"| {run['name']} | " + " | ".join(cells) + f" | {loss} | {run['source'] or '-'} |")
    return "\n".join(lines) + "\n"


def plot_runs(runs: list[dict], path: str | Path) -> None:
    """Training loss against step for every run, and each run's mean text->image R@5."""
    figure = Figure(figsize=(11, 4))
    curves, bars = figure.subplots(1, 2)
    for run in runs:
        if run["curve"]:
            steps, losses = zip(*run["curve"], strict=True)
            curves.plot(steps, losses, label=run["name"])
    curves.set_xlabel("step")
    curves.set_ylabel("training loss")
    if curves.lines:  # runs without a logged curve (a published model) draw none, and an empty legend warns
        curves.legend(fontsize=8)
    names = [run["name"] for run in runs]
    bars.bar(names, [(run["recall"] or {}).get("t2i_r5", 0.0) for run in runs])
    bars.set_ylabel("mean text→image R@5 (%)")
    bars.tick_params(axis="x", labelrotation=30)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
