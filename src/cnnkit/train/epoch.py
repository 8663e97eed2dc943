"""The pieces of a training epoch: its data (permuted, sharded, augmented, normalised on the device) and
evaluation (the optimisation steps: `train.stepper`). The whole dataset lives once on the device as uint8."""

from __future__ import annotations

import hashlib

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


def epoch_data(images, labels, seed: int, epoch: int, aug: augment.Augment, batch_size: int, world, norm):
    """This rank's inputs for `epoch`, in visiting order, and the size of its share of each global batch.

    `images` uint8 [N,C,H,W] and `labels` [N] on the device; `norm` (mean, 1/std) as `model.per_channel` makes
    them. The permutation and augmentation
    parameters come from a generator seeded by (seed, epoch) and are the same on every rank; each rank then takes
    its strided share (distributed.shard_positions). Returns (float32 images [n,C,H,W] channels_last, labels, sizes).
    """
    import torch

    from cnnkit.train.model import normalize

    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    n = len(labels)
    perm = torch.randperm(n, generator=gen)
    params = augment.draw(aug, n, gen)
    positions, sizes = distributed.shard_positions(n, batch_size, world)
    index = perm[positions].to(images.device)
    x = augment.apply(aug, images[index], params[:, positions].to(images.device))
    x = normalize(x, *norm).contiguous(memory_format=torch.channels_last)
    return x, labels[index], sizes


def evaluate(model, images, labels, mean, inv_std, batch_size: int, precision: str = "fp32") -> tuple[float, float]:
    """Mean cross-entropy and accuracy on device-resident uint8 `images` [N,C,H,W] (`mean`, `inv_std`: the
    per-channel tensors of `model.per_channel`)."""
    import torch
    import torch.nn.functional as F

    from cnnkit.train.model import normalize

    model.eval()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    with torch.inference_mode(), autocast(images.device, precision):
        for i in range(0, len(images), batch_size):
            out = model(normalize(images[i : i + batch_size], mean, inv_std)).float()
            y = labels[i : i + batch_size]
            loss_sum += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
    n = len(images)
    return loss_sum.item() / n, correct.item() / n
