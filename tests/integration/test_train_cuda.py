"""The CUDA-graph training step on a GPU: the same updates as eager steps, fresh dropout per replay, exact resume.
Skipped without CUDA (the device check, benchmarks/gpu_check.sh, runs them on the GPU machine)."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from cnnkit.cli import main
from cnnkit.data.datasets import load_idx_dir
from cnnkit.spec import ModelConfig
from cnnkit.train.config import TrainConfig
from cnnkit.train.model import Net
from cnnkit.train.run import train
from cnnkit.train.stepper import GraphSteps, Steps
from helpers import StopAfter, write_idx_dataset

pytestmark = pytest.mark.cuda


def _trained(kind, dropout: float, batches):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    net = Net(ModelConfig(dropout=dropout)).to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=len(batches) + 1, pct_start=0.25)
    steps = kind(net=net, opt=opt, sched=sched, precision="fp32", label_smoothing=0.1, device=dev)
    if isinstance(steps, GraphSteps):
        steps.capture(*batches[0])
    torch.manual_seed(1)
    for x, y in batches:
        steps(x, y)
    return net, steps


def _batches(sizes):
    g = torch.Generator().manual_seed(2)
    return [
        (torch.randn(n, 1, 28, 28, generator=g).cuda().contiguous(memory_format=torch.channels_last),
         torch.randint(0, 10, (n,), generator=g).cuda())
        for n in sizes
    ]  # fmt: skip


def test_graph_steps_update_the_weights_as_eager_steps_do():
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    batches = _batches([64] * 6 + [17, 64])  # a short batch (run eagerly) between replays
    eager, e = _trained(Steps, 0.0, batches)
    graphed, g = _trained(GraphSteps, 0.0, batches)
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
    assert g.loss_sum.item() == pytest.approx(e.loss_sum.item(), rel=1e-5) and g.correct.item() == e.correct.item()


def test_each_replay_draws_new_dropout_masks():
    x, y = _batches([64])[0]
    _, g = _trained(GraphSteps, 0.5, [(x, y)])
    g.sched = None  # the schedule was sized for one step
    sums = []
    for _ in range(3):
        g.reset()
        before = [p.detach().clone() for p in g.net.parameters()]
        g(x, y)
        with torch.no_grad():  # undo the update: only the mask may differ between the replays
            for p, b in zip(g.net.parameters(), before, strict=True):
                p.copy_(b)
        sums.append(g.loss_sum.item())
    assert len(set(sums)) == 3


def test_train_on_cuda_captures_the_step_and_resumes_to_the_same_weights(tmp_path):
    data = write_idx_dataset(tmp_path / "idx", n_train=640, n_test=64)
    args = ["train", "--data-dir", str(data), "--recipe", "default", "--epochs", "3", "--batch-size", "64",
            "--device", "cuda", "--precision", "fp32", "--json"]  # fmt: skip
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    full = json.loads(r.stdout)
    assert full["cuda_graph"] is True and "CUDA graph" in full["steps_reason"]
    cfg = TrainConfig(epochs=3, batch_size=64, device="cuda", precision="fp32")
    stopped = train(load_idx_dir(data, "idx"), cfg, tmp_path / "b", StopAfter(1))  # Ctrl-C after epoch 1
    assert stopped.interrupted and stopped.cuda_graph
    r = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "b"), "--json"])  # captures again
    assert r.exit_code == 0 and json.loads(r.stdout)["resumed_from_epoch"] == 1, r.output
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    r = CliRunner().invoke(main, [*args, "--epochs", "1", "--cuda-graph", "off", "--out", str(tmp_path / "c")])
    assert r.exit_code == 0 and json.loads(r.stdout)["cuda_graph"] is False
