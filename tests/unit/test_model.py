import numpy as np
import pytest
import torch

from cnnkit.spec import ModelConfig
from cnnkit.train.model import Deployable, Net, count_parameters


def test_seed_architecture():
    net = Net()
    assert count_parameters(net) == 3_199_106
    assert net.fc1.in_features == 3136 and net.fc1.out_features == 1000 and net.fc2.out_features == 10
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_config_round_trip():
    cfg = ModelConfig(num_classes=7)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_deployable_takes_uint8():
    net = Net().eval()
    dep = Deployable(net, 0.1307, 0.3081)
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    ref = net((x.float() / 255 - 0.1307) / 0.3081)
    torch.testing.assert_close(dep(x), ref, atol=1e-5, rtol=1e-5)


def _data(n: int, side: int, classes: int, constant: bool = False):
    from cnnkit.data.dataset import Dataset

    rng = np.random.default_rng(0)
    shape = (n, 1, side, side)
    images = np.full(shape, 7, np.uint8) if constant else rng.integers(0, 256, shape, np.uint8)
    labels = np.arange(n) % classes
    names = tuple(f"c{i}" for i in range(classes))
    return Dataset(name="made", classes=names, train_images=images, train_labels=labels, test_images=images[:2],
                   test_labels=labels[:2], source="made here")  # fmt: skip


@pytest.mark.parametrize(
    "data,match",
    [
        (lambda: _data(20, 1024, 2), "no model can be built for this data: model config describes"),
        (lambda: _data(4, 28, 10_001), "num_classes=10001 is not within"),
        (lambda: _data(8, 28, 2, constant=True), "every training pixel has the same value"),
    ],
)
def test_data_no_model_can_learn_from_is_refused_before_any_allocation(data, match, tmp_path):
    from cnnkit.errors import DataError
    from cnnkit.train import distributed
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.plan import check_inputs

    with pytest.raises(DataError, match=match):
        check_inputs(data(), TrainConfig(device="cpu"), distributed.from_env())


def test_a_header_whose_fields_multiply_past_any_memory_is_refused():
    from cnnkit.errors import CheckpointError
    from cnnkit.spec import ModelConfig

    assert ModelConfig().parameters == 3_199_106  # the seed's network, as the README says
    with pytest.raises(CheckpointError, match="each within bounds, but not together"):
        ModelConfig.from_dict({"conv2_channels": 1024, "hidden": 16384, "image_size": 1024})


def test_a_set_that_will_not_fit_on_the_device_is_streamed_from_the_host_and_trains_the_same(monkeypatch):
    from types import SimpleNamespace

    import torch

    from cnnkit.train import augment, data, distributed
    from cnnkit.train.epoch import epoch_data, epoch_plan
    from cnnkit.train.model import per_channel

    ds = _data(100, 28, 2)
    monkeypatch.setattr(data, "_free_bytes", lambda device: 50_000)
    assert "streamed from the memory-mapped cache" in data.stream_reason(ds, SimpleNamespace(type="cpu"))
    monkeypatch.setattr(data, "_free_bytes", lambda device: 10**9)
    assert data.stream_reason(ds, SimpleNamespace(type="cpu")) == ""
    # a batch gathered from the host array is the batch gathered on the device
    dev = torch.device("cpu")
    on_device = data.to_device(ds.train_images, ds.train_labels, dev)
    streamed = data.to_device(ds.train_images, ds.train_labels, dev, stream=True)
    aug, world, norm = augment.Augment(shift=2, rotate=10, flip=True), distributed.World(), per_channel(0.5, 0.25)
    whole = epoch_data(*on_device, 0, 3, aug, 16, world, norm)[0]
    plan = epoch_plan(*streamed, 0, 3, aug, 16, world, norm)
    assert isinstance(plan.images, np.ndarray)
    torch.testing.assert_close(torch.cat([plan.batch(i, 16)[0] for i in range(0, 96, 16)]), whole[:96], rtol=0, atol=0)
