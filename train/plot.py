"""The training run's own picture: training.png beside metrics.jsonl."""

import json
from pathlib import Path

from matplotlib.figure import Figure  # the object API draws to files without a display or pyplot state


def plot_training(metrics_file: str | Path, path: str | Path) -> None:
    """A run's curves from its metrics.jsonl: loss, t and b, and validation R@5 when it was measured."""
    rows = [json.loads(line) for line in Path(metrics_file).read_text(encoding="utf-8").splitlines() if line]
    train_rows = [row for row in rows if "loss" in row]
    val_rows = [row for row in rows if "val" in row]
    figure = Figure(figsize=(13, 3.6))
    loss_axis, t_axis, b_axis, val_axis = figure.subplots(1, 4)
    for axis, key in ((loss_axis, "loss"), (t_axis, "t"), (b_axis, "b")):
        points = [(row["step"], row[key]) for row in train_rows if row.get(key) is not None]
        if points:
            axis.plot(*zip(*points, strict=True))
        axis.set_xlabel("step")
        axis.set_title(key)
    if val_rows:
        steps = [row["step"] for row in val_rows]
        val_axis.plot(steps, [row["val"]["t2i_r5"] for row in val_rows], marker="o", label="text→image")
        val_axis.plot(steps, [row["val"]["i2t_r5"] for row in val_rows], marker="o", label="image→text")
        val_axis.legend(fontsize=8)
    val_axis.set_xlabel("step")
    val_axis.set_title("validation R@5 (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
