"""Where a training step's time goes: the host (Python issuing kernels) or the device, eager vs CUDA graph.

    python benchmarks/train_profile.py [--device cuda] [--steps 300] [--out DIR]

For each way of stepping (eager; on CUDA also the captured graph, `train.stepper`, and as a ceiling the whole step
with a capturable AdamW at a constant learning rate in one graph), the default recipe's model, fused AdamW and
one-cycle schedule take --steps steps of batch 64 from an epoch laid out as training lays it out
(`epoch_data`: permuted, rotated and shifted, normalised on the device). Per step it reports:
- `issue_ms`: host time to issue the step (the loop's time before it waits for the device),
- `wall_ms`: time per step once the device has finished too (issue_ms close to wall_ms: host-bound),
- from `torch.profiler` over 50 further steps: the top operators by self host time and by self device time.
Plus the time `epoch_data` takes for a 54,000-image epoch (augmentation runs once per epoch, not per step).
Writes DIR/train_profile.json and DIR/train_profile.md (a short table, no trace); DIR defaults to
benchmarks/results/cuda on CUDA, a temporary folder elsewhere (`--device cpu` checks the plumbing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine

N_EPOCH = 54_000  # a 60,000-image training set less the default 10% validation split
TOP = 8


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(device, graph: bool, total_steps: int):
    """A fresh model, optimizer and schedule as `train.loop.setup` makes them, and its step runner."""
    import torch

    from cnnkit.spec import ModelConfig
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.model import Net
    from cnnkit.train.stepper import make_steps

    cfg = TrainConfig()
    torch.manual_seed(0)
    model = Net(ModelConfig(dropout=cfg.dropout)).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda" or None
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=0.25)
    steps = make_steps(graph, net=model, opt=opt, sched=sched, precision="fp32",
                       label_smoothing=cfg.label_smoothing, device=device)  # fmt: skip
    return cfg, steps


def _epoch(device, cfg, n: int):
    """An epoch's inputs as training prepares them, and the seconds that took (on the device included)."""
    import torch

    from cnnkit.train import augment, distributed
    from cnnkit.train.epoch import epoch_data

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8).to(device)
    labels = torch.randint(0, 10, (n,), generator=g).to(device)
    aug = augment.Augment(shift=cfg.shift, rotate=cfg.rotate)
    world = distributed.World(rank=0, size=1, local_rank=0)
    norm = (0.1307, 0.3081)  # MNIST's mean and std on the 0..1 scale `normalize` uses (values do not change timing)
    epoch_data(images, labels, 0, 0, aug, cfg.batch_size, world, norm)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    x, y, _ = epoch_data(images, labels, 0, 1, aug, cfg.batch_size, world, norm)
    _sync(device)
    return x, y, time.perf_counter() - t0


def _top(prof, key: str, steps: int) -> list[dict]:
    rows = []
    for e in prof.key_averages():
        host = e.self_cpu_time_total
        dev = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        rows.append({"op": e.key[:60], "calls_per_step": e.count / steps,
                     "self_host_us_per_step": host / steps, "self_device_us_per_step": dev / steps})  # fmt: skip
    return sorted(rows, key=lambda r: -r[key])[:TOP]


class WholeGraph:
    """A ceiling, not how training runs: forward, backward and a capturable fused AdamW at a constant learning rate
    (no schedule) in one CUDA graph, after the PyTorch documentation's whole-network capture. It says what capturing
    the optimizer too would gain over `GraphSteps` (whose AdamW and one-cycle schedule run outside the graph)."""

    def __init__(self, device, x, y) -> None:
        import torch
        import torch.nn.functional as F

        from cnnkit.spec import ModelConfig
        from cnnkit.train.config import TrainConfig
        from cnnkit.train.model import Net

        cfg = TrainConfig()
        torch.manual_seed(0)
        model = Net(ModelConfig(dropout=cfg.dropout)).to(device).to(memory_format=torch.channels_last).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True,
                                capturable=True)  # fmt: skip
        self.x, self.y = x.clone(), y.clone()

        def step() -> None:
            out = model(self.x)
            F.cross_entropy(out.float(), self.y, label_smoothing=cfg.label_smoothing).backward()
            opt.step()

        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            step()

    def __call__(self, images, labels) -> None:
        self.x.copy_(images)
        self.y.copy_(labels)
        self.graph.replay()


MODES = ("eager", "cuda-graph", "whole-graph-ceiling")


def profile_mode(device, mode: str, x, y, steps: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    batch = 64
    if mode == "whole-graph-ceiling":
        run = WholeGraph(device, x[:batch], y[:batch])
    else:
        _, run = _setup(device, mode == "cuda-graph", total_steps=steps + 100)
        if mode == "cuda-graph":
            run.capture(x[:batch], y[:batch])
    n_batches = len(y) // batch

    def go(k: int, start: int) -> None:
        for i in range(start, start + k):
            j = (i % n_batches) * batch
            run(x[j : j + batch], y[j : j + batch])

    go(20, 0)  # warm-up: cuDNN autotuning, allocations, optimizer state
    _sync(device)
    t0 = time.perf_counter()
    go(steps, 20)
    issued = time.perf_counter() - t0
    _sync(device)
    wall = time.perf_counter() - t0
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    k = 50
    with profile(activities=activities) as prof:
        go(k, steps + 20)
        _sync(device)
    return {
        "mode": mode,
        "steps": steps,
        "issue_ms_per_step": 1e3 * issued / steps,
        "wall_ms_per_step": 1e3 * wall / steps,
        "images_per_s": batch * steps / wall,
        "epoch_54k_s_at_this_rate": N_EPOCH / batch * wall / steps,
        "top_by_host": _top(prof, "self_host_us_per_step", k),
        "top_by_device": _top(prof, "self_device_us_per_step", k) if device.type == "cuda" else [],
    }


def markdown(report: dict) -> str:
    head = f"# Training step profile ({report['device']}, commit {report['machine']['commit'][:10]})"
    epoch = f"epoch_data for {report['epoch_images']:,} images: {report['epoch_data_s']:.3f} s"
    table = ["| mode | host issue ms/step | wall ms/step | images/s | 54k-image epoch s |", "|---|---|---|---|---|"]
    lines = [head, "", f"`{report['command']}`; {epoch}", "", *table]
    for m in report["modes"]:
        if "error" in m:
            lines.append(f"| {m['mode']} | failed: {m['error'][:100]} | | | |")
            continue
        lines.append(f"| {m['mode']} | {m['issue_ms_per_step']:.3f} | {m['wall_ms_per_step']:.3f} | "
                     f"{m['images_per_s']:,.0f} | {m['epoch_54k_s_at_this_rate']:.2f} |")  # fmt: skip
    for m in report["modes"]:
        if "error" in m:
            continue
        for key, title in (("top_by_host", "self host"), ("top_by_device", "self device")):
            if not m[key]:
                continue
            lines += ["", f"{m['mode']}: top operators by {title} time (µs per step)", "",
                      "| operator | calls/step | self host µs | self device µs |", "|---|---|---|---|"]  # fmt: skip
            lines += [f"| `{r['op']}` | {r['calls_per_step']:.1f} | {r['self_host_us_per_step']:.1f} | "
                      f"{r['self_device_us_per_step']:.1f} |" for r in m[key]]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--epoch-images", type=int, default=N_EPOCH, help="images in the epoch laid out (54,000)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as training sets them
    out = args.out or (RESULTS / "cuda" if device.type == "cuda" else Path(tempfile.mkdtemp()))
    cfg, _ = _setup(device, False, 10)
    x, y, epoch_s = _epoch(device, cfg, args.epoch_images)
    modes = []
    for mode in MODES if device.type == "cuda" else MODES[:1]:
        try:
            modes.append(profile_mode(device, mode, x, y, args.steps))
        except RuntimeError as exc:  # one mode that cannot run must not cost the others' figures
            modes.append({"mode": mode, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({machine()['cpu']})",
        "torch": torch.__version__,
        "machine": machine(),
        "command": "python benchmarks/train_profile.py " + " ".join(sys.argv[1:]),
        "epoch_images": args.epoch_images,
        "epoch_data_s": epoch_s,
        "modes": modes,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_profile.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "train_profile.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'train_profile.json'} and {out / 'train_profile.md'}")


if __name__ == "__main__":
    main()
