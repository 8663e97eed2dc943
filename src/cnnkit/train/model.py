"""The seed tutorial's CNN (its configuration is `spec.ModelConfig`), the exact fc1·fc2 fold, and the deployable
wrapper (uint8 pixels in, logits out)."""

from __future__ import annotations

import torch
from torch import nn

from cnnkit.spec import ModelConfig


class Net(nn.Module):
    """Conv(1->32,5x5)+ReLU+Pool -> Conv(32->64,5x5)+ReLU+Pool -> Dropout -> FC(3136->1000) -> FC(1000->10)."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        c = config
        pad = c.kernel_size // 2
        self.layer1 = nn.Sequential(
            nn.Conv2d(c.in_channels, c.conv1_channels, c.kernel_size, padding=pad), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.layer2 = nn.Sequential(
            nn.Conv2d(c.conv1_channels, c.conv2_channels, c.kernel_size, padding=pad), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.drop_out = nn.Dropout(c.dropout)
        self.fc1 = nn.Linear(c.flat_features, c.hidden)
        self.fc2 = nn.Linear(c.hidden, c.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(x))
        x = torch.flatten(x, 1)
        return self.fc2(self.fc1(self.drop_out(x)))


class FoldedNet(nn.Module):
    """`Net` for inference with fc1 and fc2 folded into one linear layer: exactly the same function.

    The seed network has no non-linearity between fc1 and fc2, and dropout is the identity at inference, so
    fc2(fc1(x)) = (W2 W1) x + (W2 b1 + b2). The product is formed in float64, then rounded to float32 once.
    """

    def __init__(self, net: Net):
        super().__init__()
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        w1, b1 = net.fc1.weight.detach().double(), net.fc1.bias.detach().double()
        w2, b2 = net.fc2.weight.detach().double(), net.fc2.bias.detach().double()
        self.fc = nn.Linear(w1.shape[1], w2.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_((w2 @ w1).float())
            self.fc.bias.copy_((w2 @ b1 + b2).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(x, 1))


def per_channel(mean, std, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The statistics (a number, or one per channel) as float32 [1, C, 1, 1] tensors: the mean, and the reciprocal
    of the std (formed in float64, rounded once: the same numbers as the scalar arithmetic for one channel)."""
    mean, std = (tuple(v) if isinstance(v, (list, tuple)) else (float(v),) for v in (mean, std))
    shape = (1, len(mean), 1, 1)
    m = torch.tensor(mean, dtype=torch.float64).reshape(shape)
    inv = 1.0 / torch.tensor(std, dtype=torch.float64).reshape(shape)
    return m.to(device=device, dtype=torch.float32), inv.to(device=device, dtype=torch.float32)


def normalize(images: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
    """uint8 pixels [N,C,H,W] -> float32 normalised per channel the way the network was trained (`per_channel`'s
    tensors). Shared by training and export."""
    return (images.to(torch.float32) * (1.0 / 255.0) - mean) * inv_std


class Deployable(nn.Module):
    """The exported contract: `images` uint8 [N,C,H,W] -> `logits` float32 [N,classes], normalisation inside."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        m, inv = per_channel(mean, std)
        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("inv_std", inv, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(normalize(images, self.mean, self.inv_std))


def tensor_from(x) -> torch.Tensor:
    """A tensor on a numpy array's memory; a read-only array (IDX files, np.frombuffer, ONNX Runtime outputs) is
    copied first, since torch cannot honour read-only memory and warns "The given NumPy array is not writable"."""
    return torch.from_numpy(x if x.flags.writeable else x.copy())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
