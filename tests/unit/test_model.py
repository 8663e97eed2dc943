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
