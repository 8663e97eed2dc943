"""Human-readable rendering of result dataclasses. Computing lives elsewhere; `--json` bypasses this."""

from __future__ import annotations


def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A plain aligned text table. `align` is one char per column, 'l' or 'r' (default: first left, rest right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def fmt(row):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)).rstrip()

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def render_train(r) -> str:
    lines = []
    if r.epochs:
        rows = [[e.epoch, f"{e.train_loss:.4f}", f"{e.train_accuracy:.2%}", f"{e.test_loss:.4f}",
                 f"{e.test_accuracy:.2%}", f"{e.seconds:.1f}", f"{e.images_per_s:,.0f}"] for e in r.epochs]
        lines.append(table(["epoch", "train loss", "train acc", "test loss", "test acc", "s", "img/s"], rows))
        lines.append("")
        lines.append(f"test accuracy {r.test_accuracy:.2%} on {r.dataset['name']} ({r.dataset['test_size']:,} images)")
        lines.append(f"device {r.device}, {r.precision}; {r.elapsed_s:.1f} s total, "
                     f"{r.images_per_s:,.0f} train img/s")
    if r.interrupted:
        lines.append("interrupted: " + (f"kept epoch {len(r.epochs)}" if r.epochs else "no epoch completed, nothing saved"))
    if r.checkpoint:
        lines.append(f"checkpoint {r.checkpoint}")
    return "\n".join(lines)
