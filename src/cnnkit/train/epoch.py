"""The pieces of a training epoch: its data (permuted, sharded, augmented, normalised on the device) and
evaluation (the optimisation steps: `train.stepper`). The whole dataset lives once on the device as uint8."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.train import augment, distributed


def epoch_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for (seed, epoch[, rank]): epoch e draws the same numbers however the run got there."""
    digest = hashlib.sha256(",".join(str(k) for k in (seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def autocast(device, precision: str, cache: bool = True):
    """bf16 autocast for precision "bf16" (else a no-op context); `cache=False` inside a CUDA graph capture."""
    import torch

    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=cache
    )


@dataclass(frozen=True)
class EpochData:
    """This rank's share of an epoch, in visiting order, made a batch at a time (`batch`): the images are gathered
    (from the device, or from a memory-mapped set streamed from the host), augmented and normalised on the device."""

    images: Any  # uint8 [N,C,H,W]: a device tensor, or a numpy array (memory-mapped) when the set is streamed
    labels: Any  # int64 [N] on the device
    index: Any  # int64 [n] (CPU): the images this rank visits, in order
    params: Any  # float32 [5, n] (CPU): their augmentation parameters
    sizes: list[int]  # this rank's share of each global batch
    aug: augment.Augment
    norm: tuple[Any, Any]  # (mean, 1/std) as `model.per_channel` makes them, on the device

    def batch(self, offset: int, size: int) -> tuple[Any, Any]:
        """Float32 images [size,C,H,W] (channels_last) and labels of positions offset..offset+size."""
        import torch

        from cnnkit.train.model import normalize

        device = self.labels.device
        idx = self.index[offset : offset + size]
        x = gather(self.images, idx, device)
        x = augment.apply(self.aug, x, self.params[:, offset : offset + size].to(device))
        x = normalize(x, *self.norm).contiguous(memory_format=torch.channels_last)
        return x, self.labels[idx.to(device)]


def gather(images: Any, idx: Any, device: Any) -> Any:
    """images[idx] on `device`: indexed there when the set lives there, else read from the host array (the pages of
    a memory-mapped cache are read as they are needed) and copied."""
    import torch

    if isinstance(images, torch.Tensor):
        return images[idx.to(images.device)]
    from cnnkit.train.model import tensor_from

    return tensor_from(np.ascontiguousarray(images[idx.numpy()])).to(device, non_blocking=True)


def epoch_plan(images, labels, seed: int, epoch: int, aug: augment.Augment, batch_size: int, world, norm) -> EpochData:
    """This rank's share of `epoch`: the permutation and augmentation parameters come from a generator seeded by
    (seed, epoch) and are the same on every rank; each rank then takes its strided share
    (distributed.shard_positions). `images` uint8 [N,C,H,W] (on the device, or a host array streamed from), `labels`
    [N] on the device, `norm` (mean, 1/std) as `model.per_channel` makes them."""
    import torch

    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    n = len(labels)
    perm = torch.randperm(n, generator=gen)
    params = augment.draw(aug, n, gen)
    positions, sizes = distributed.shard_positions(n, batch_size, world)
    return EpochData(images, labels, perm[positions], params[:, positions], list(sizes), aug, norm)


def epoch_data(images, labels, seed: int, epoch: int, aug: augment.Augment, batch_size: int, world, norm):
    """The whole of this rank's epoch at once (`epoch_plan`, every batch): (float32 images [n,C,H,W] channels_last,
    labels, sizes)."""
    data = epoch_plan(images, labels, seed, epoch, aug, batch_size, world, norm)
    x, y = data.batch(0, len(data.index))
    return x, y, data.sizes


def evaluate(model, images, labels, mean, inv_std, batch_size: int, precision: str = "fp32") -> tuple[float, float]:
    """Mean cross-entropy and accuracy on device-resident uint8 `images` [N,C,H,W] (`mean`, `inv_std`: the
    per-channel tensors of `model.per_channel`)."""
    import torch
    import torch.nn.functional as F

    from cnnkit.train.model import normalize, tensor_from

    model.eval()
    device = labels.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    with torch.inference_mode(), autocast(device, precision):
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size]
            x = x if isinstance(x, torch.Tensor) else tensor_from(np.ascontiguousarray(x)).to(device)
            out = model(normalize(x, mean, inv_std)).float()
            y = labels[i : i + batch_size]
            loss_sum += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
    n = len(images)
    return loss_sum.item() / n, correct.item() / n
