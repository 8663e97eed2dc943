"""How the loop runs its optimisation steps: eagerly, or by replaying a CUDA graph.

A step of this small model is bound by the host on a fast GPU: launching the forward's, the backward's and the
running sums' kernels one by one from Python takes longer than the GPU takes to run them. `GraphSteps` captures the
forward, the loss, the backward and the epoch's running sums (loss, correct answers) once in a CUDA graph and
replays it per batch: one launch instead of dozens. The fused AdamW update and the one-cycle schedule stay outside
the graph and run exactly as in eager mode (the schedule changes the learning rate and AdamW's beta1 every step,
which a captured fused update would freeze). A batch of another size (an epoch's last) runs eagerly.

Both kinds keep the epoch's sums on the device (`loss_sum`, `correct`); the loop reads them when it reports.
"""

from __future__ import annotations

from typing import Any

from cnnkit.errors import DeviceError, option_error
from cnnkit.spec import CUDA_GRAPH
from cnnkit.train.epoch import autocast

WARMUP = 3  # eager forward/backward passes on a side stream before the capture (cuDNN autotuning, allocations)


def choose_graph(requested: str, device: Any, distributed: bool, batch: int, n_train: int) -> tuple[bool, str]:
    """Whether to capture the training step in a CUDA graph, and why (said at the start and in the result).

    `distributed`: in a process group (torchrun); `batch`: this process's share of a global batch. `on` where a
    graph cannot be used is a DeviceError; `auto` then runs eagerly and says why.
    """
    if requested not in CUDA_GRAPH:
        raise ValueError(f"cuda_graph must be one of {CUDA_GRAPH}, got {requested!r}")
    if requested == "off":
        return False, "eager steps (--cuda-graph off)"
    why_not = None
    if device.type != "cuda":
        why_not = f"CUDA graphs need a CUDA device (this run is on {device.type})"
    elif distributed:
        why_not = "CUDA graphs are not used under torchrun (DDP's gradient all-reduce is not captured)"
    elif n_train < batch:
        why_not = f"fewer training images ({n_train}) than one batch ({batch}): no full batch to replay"
    if why_not is None:
        return True, "CUDA graph of forward, backward and running sums; fused AdamW and schedule outside it"
    if requested == "on":
        raise option_error(DeviceError, "cuda_graph", "on", why_not)
    return False, f"eager steps ({why_not})"


class Steps:
    """Eager optimisation steps: forward, loss, backward, the running sums, AdamW, the schedule."""

    graph = False

    def __init__(self, *, net, opt, sched, precision: str, label_smoothing: float, device) -> None:
        import torch

        self.net, self.opt, self.sched = net, opt, sched
        self.precision, self.label_smoothing = precision, label_smoothing
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)  # sum of loss x batch size
        self.correct = torch.zeros((), device=device, dtype=torch.float64)
        self._keep_grads = False  # after a capture the gradients live in the graph's memory: zeroed, never freed

    def reset(self) -> None:
        """Zero the running sums (at the start of an epoch)."""
        self.loss_sum.zero_()
        self.correct.zero_()

    def __call__(self, images, labels) -> None:
        """One step on a prepared batch (normalised float32 images [B,C,H,W] on the device, labels [B])."""
        self.opt.zero_grad(set_to_none=not self._keep_grads)
        self._forward_backward(images, labels)
        self._update()

    def _forward_backward(self, images, labels, cache: bool = True) -> None:
        import torch.nn.functional as F

        with autocast(images.device, self.precision, cache=cache):
            out = self.net(images)
            loss = F.cross_entropy(out.float(), labels, label_smoothing=self.label_smoothing)
        loss.backward()
        self.loss_sum += loss.detach() * len(labels)
        self.correct += (out.detach().argmax(1) == labels).sum()

    def _update(self) -> None:
        self.opt.step()
        if self.sched is not None:
            self.sched.step()


class GraphSteps(Steps):
    """Steps whose full-size batches replay one captured CUDA graph (see the module's docstring).

    `capture()` before the first step and before the epoch's random seed is set: its warm-up passes draw dropout
    masks, so a resumed run, which captures again, then draws the same numbers as the run it continues.
    """

    graph = True

    def capture(self, images, labels) -> None:
        """Capture the step for batches shaped like `images` [B,C,H,W] (channels_last) and `labels` [B]."""
        import torch

        self._x, self._y = images.clone(), labels.clone()  # the graph's static inputs, refilled per batch
        device = self._x.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                self.opt.zero_grad(set_to_none=True)
                self._forward_backward(self._x, self._y, cache=False)
        torch.cuda.current_stream(device).wait_stream(side)
        # gradients made inside the capture are assigned, not accumulated, by each replay
        self.opt.zero_grad(set_to_none=True)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._forward_backward(self._x, self._y, cache=False)  # autocast's weight cache must not be captured
        self._keep_grads = True
        self.reset()  # the warm-up's sums are not the epoch's

    def __call__(self, images, labels) -> None:
        if len(labels) != len(self._y):
            super().__call__(images, labels)  # into the same gradient tensors (zeroed in place)
            return
        self._x.copy_(images)
        self._y.copy_(labels)
        self._graph.replay()
        self._update()


def make_steps(graph: bool, **kwargs) -> Steps:
    """`GraphSteps` (not yet captured) or `Steps`, built with Steps' keyword arguments."""
    return GraphSteps(**kwargs) if graph else Steps(**kwargs)


def ready_steps(
    graph: bool, requested: str, reason: str, shape: tuple[int, ...], kwargs: dict[str, Any]
) -> tuple[Steps, str]:
    """The step runner `choose_graph` chose, captured for batches of `shape` where it chose a graph; and why it
    runs as it does. A capture that fails under `--cuda-graph auto` falls back to eager steps and says so; under
    `on` it is a TrainingError. `kwargs`: Steps' keyword arguments."""
    import torch

    from cnnkit.errors import TrainingError

    steps = make_steps(graph, **kwargs)
    if not isinstance(steps, GraphSteps):
        return steps, reason
    device = kwargs["device"]
    x = torch.zeros(*shape, device=device).contiguous(memory_format=torch.channels_last)
    try:
        steps.capture(x, torch.zeros(shape[0], dtype=torch.int64, device=device))
    except RuntimeError as exc:
        if requested == "on":
            raise TrainingError(f"--cuda-graph on: capturing the training step failed: {exc}") from None
        kwargs["opt"].zero_grad(set_to_none=True)
        return make_steps(False, **kwargs), f"eager steps (the CUDA graph capture failed: {str(exc)[:200]})"
    return steps, reason


def measure_step_rate(config, device, batch_size: int, precision: str, graph: bool = False, steps: int = 20) -> float:
    """Training images/s of a fresh model's steps at `precision` on `device`, run as training runs them (a CUDA
    graph when `graph`); for `--precision auto` and the recipe tuner. The weights are thrown away; 5 untimed steps
    first (cuDNN autotuning, allocations)."""
    import time

    import torch

    from cnnkit.train import nets

    model = nets.build(config).to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    step = make_steps(graph, net=model, opt=opt, sched=None, precision=precision, label_smoothing=0.0, device=device)
    c, s = config.in_channels, config.image_size
    x = torch.randn(batch_size, c, s, s, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, config.num_classes, (batch_size,), device=device)
    if isinstance(step, GraphSteps):
        step.capture(x, y)
    for i in range(5 + steps):
        if i == 5:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch_size * steps / (time.perf_counter() - t0)
