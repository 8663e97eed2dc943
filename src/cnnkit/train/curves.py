"""`curves.png`: loss and accuracy per epoch (train, validation, test), when matplotlib is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cnnkit import atomic

CURVES_NAME = "curves.png"


def write(directory: Path, history: list[dict]) -> Path | None:
    """Plot `history` (EpochMetrics dicts) into directory/curves.png; None without matplotlib or epochs."""
    if not history or importlib.util.find_spec("matplotlib") is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-"), ("val", "--"), ("test", ":")):
        if history[0].get(f"{split}_loss") is None:
            continue
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, marker="o", label=split)
        ax_acc.plot(epochs, [100 * h[f"{split}_accuracy"] for h in history], style, marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = directory / CURVES_NAME
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path
