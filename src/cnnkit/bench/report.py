"""Bench result files: CSV, a latency/throughput plot and a confusion-matrix plot (matplotlib: `plot` extra)."""

from __future__ import annotations

import csv
import io
import os

from cnnkit import atomic
from cnnkit.errors import MissingExtraError

CSV_FIELDS = [
    "backend",
    "batch_size",
    "ran_on",
    "fell_back",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "n",
    "images_per_s",
    "speedup_vs_eager",
    "device_p50_ms",
    "error",
]


def write_csv(result, path: str | os.PathLike) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS)
    w.writeheader()
    for r in result.rows:
        lat = r.latency
        w.writerow(
            {
                "backend": r.backend,
                "batch_size": r.batch_size,
                "ran_on": r.ran_on,
                "fell_back": r.fell_back,
                "p50_ms": lat and lat.p50_ms,
                "p90_ms": lat and lat.p90_ms,
                "p99_ms": lat and lat.p99_ms,
                "mean_ms": lat and lat.mean_ms,
                "n": lat.n if lat else 0,
                "images_per_s": r.images_per_s,
                "speedup_vs_eager": r.speedup_vs_eager,
                "device_p50_ms": r.device_latency.p50_ms if r.device_latency else None,
                "error": r.error,
            }
        )
    atomic.write_text(path, buf.getvalue())


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("--plot needs matplotlib: pip install 'cnnkit[plot]'") from None
    return plt


def _plain(text: str) -> str:
    """`text` shown as it is: matplotlib reads a pair of `$` as mathematics (a label `$\\foo$` would not parse)."""
    return text.replace("$", r"\$")


def plot_confusion(result, path: str | os.PathLike) -> None:
    """The confusion matrix of an `EvalResult`, counts in the cells, rows the true class."""
    import numpy as np

    plt = _pyplot()
    m = np.asarray(result.confusion)
    labels = [_plain(c.label) for c in result.per_class]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(labels), 0.8 + 0.5 * len(labels)))
    ax.imshow(np.log1p(m), cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > m.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = f"{result.dataset} {result.split}: accuracy {result.accuracy:.2%} ({result.variant})"
    ax.set_title(_plain(title), fontsize=9)
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def plot(result: dict, path: str | os.PathLike) -> None:
    """Latency (p50, with p90 band) and throughput against batch size, one line per backend.

    Takes the JSON form of a BenchResult (`result.to_dict()` or a saved bench JSON), so saved results can be
    plotted again elsewhere (`benchmarks/plot_bench.py`).
    """
    plt = _pyplot()
    rows = [r for r in result["rows"] if r.get("latency")]  # failed rows have no timings
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in dict.fromkeys(r["backend"] for r in rows):
        mine = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["batch_size"])
        bs = [r["batch_size"] for r in mine]
        label = f"{backend} ({mine[0]['ran_on']})" + (" FELL BACK" if mine[0].get("fell_back") else "")
        (line,) = ax1.plot(bs, [r["latency"]["p50_ms"] for r in mine], marker="o", label=label)
        ax1.fill_between(
            bs,
            [r["latency"]["p50_ms"] for r in mine],
            [r["latency"]["p90_ms"] for r in mine],
            color=line.get_color(),
            alpha=0.15,
        )
        ax2.plot(bs, [r["images_per_s"] for r in mine], marker="o", label=label)
    env = result["environment"]
    where = env.get("gpu") or f"{env['cpu']}, {env['threads']} threads"
    for ax, ylab, title in ((ax1, "latency p50 (ms, band to p90)", "Latency"), (ax2, "images / s", "Throughput")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylab)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle(f"cnnkit bench on {result['device']}: {where}", fontsize=10)
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
