"""Where the training step is captured in a CUDA graph, and where not (the choice is said, never silent)."""

import pytest
import torch

from cnnkit.errors import DeviceError
from cnnkit.train.stepper import Steps, choose_graph


def test_auto_captures_only_on_one_cuda_process_with_a_full_batch():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert choose_graph("auto", cuda, False, 64, 1000)[0] is True
    graph, why = choose_graph("auto", cpu, False, 64, 1000)
    assert graph is False and "need a CUDA device" in why
    graph, why = choose_graph("auto", cuda, True, 32, 1000)
    assert graph is False and "torchrun" in why
    graph, why = choose_graph("auto", cuda, False, 64, 10)
    assert graph is False and "fewer training images (10) than one batch (64)" in why
    assert choose_graph("off", cuda, False, 64, 1000) == (False, "eager steps (--cuda-graph off)")


def test_on_where_no_graph_can_run_is_an_error_that_says_why():
    with pytest.raises(DeviceError, match="cuda_graph='on': CUDA graphs need a CUDA device"):
        choose_graph("on", torch.device("cpu"), False, 64, 1000)
    with pytest.raises(DeviceError, match="torchrun"):
        choose_graph("on", torch.device("cuda", 0), True, 32, 1000)


def test_eager_steps_keep_the_epochs_running_sums_on_the_device():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    steps = Steps(net=net, opt=opt, sched=None, precision="fp32", label_smoothing=0.0, device="cpu")
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    before = torch.nn.functional.cross_entropy(net(x), y).item()
    correct = (net(x).argmax(1) == y).sum().item()
    steps(x, y)
    assert steps.loss_sum.item() == pytest.approx(before * 8, rel=1e-6) and steps.correct.item() == correct
    assert torch.nn.functional.cross_entropy(net(x), y).item() < before  # it stepped
    steps.reset()
    assert steps.loss_sum.item() == 0 and steps.correct.item() == 0


def test_train_cli_refuses_a_cuda_graph_on_the_cpu_in_one_line(tmp_path):
    from click.testing import CliRunner

    from cnnkit.cli import main

    args = ["train", "--dataset", "sample", "--device", "cpu", "--cuda-graph", "on", "--out", str(tmp_path / "r")]
    r = CliRunner().invoke(main, args)
    last = r.stderr.strip().splitlines()[-1]
    assert r.exit_code == 1 and last.startswith("Error: --cuda-graph on: CUDA graphs need a CUDA device")
    assert "Traceback" not in r.output and not (tmp_path / "r").exists()
