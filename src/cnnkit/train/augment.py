"""Augmentation drawn once per epoch for the whole epoch and applied on the device, in a few tensor operations.

The random parameters of an epoch (per image: rotation, scale, x/y shift, a left-right flip) are drawn on the CPU
from the epoch's generator for every image in visiting order, then each rank applies those of its own share. So an
epoch's data is the same whatever the number of processes, and the same after a resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Augment:
    shift: int = 2  # translation, whole pixels, each way
    rotate: float = 0.0  # degrees, each way
    scale: float = 0.0  # relative, each way (0.1: 90%..110%)
    flip: bool = False  # mirror half the images left to right (clothes, not digits)

    @property
    def enabled(self) -> bool:
        return self.shift > 0 or self.rotate > 0 or self.scale > 0 or self.flip

    @property
    def integer_shift_only(self) -> bool:
        return self.rotate == 0 and self.scale == 0


def draw(aug: Augment, n: int, gen):
    """Parameters for n images, float32 [5, n]: angle (radians), scale, dx, dy (pixels), flip (1: mirrored)."""
    import torch

    def uniform(limit: float):
        return (torch.rand(n, generator=gen) * 2 - 1) * limit

    shifts = torch.randint(-aug.shift, aug.shift + 1, (2, n), generator=gen).to(torch.float32)
    angle, scale = uniform(math.radians(aug.rotate)), 1 + uniform(aug.scale)
    # drawn last and only when asked for, so the other parameters are those of a run without flips
    flips = torch.randint(0, 2, (n,), generator=gen).to(torch.float32) if aug.flip else torch.zeros(n)
    return torch.stack([angle, scale, shifts[0], shifts[1], flips])


def apply(aug: Augment, images, params):
    """Augment uint8 images [B,C,H,W] with params [5,B] (on the images' device). Returns uint8 for integer shifts,
    float32 pixels (0..255) for rotation/scale (bilinear, zero padding)."""
    import torch
    import torch.nn.functional as F

    if not aug.enabled or len(images) == 0:
        return images
    b, _, h, w = images.shape
    if aug.integer_shift_only:  # exact pixel moves by gathering from a zero-padded copy
        s = aug.shift
        padded = F.pad(images, (s,) * 4)
        dy = (params[3] + s).to(torch.int64)
        src = params[2].to(torch.int64)[:, None] + torch.arange(w, device=images.device)  # source columns
        src = torch.where(params[4][:, None] > 0, w - 1 - src, src)  # of the mirror image, for a flipped one
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]
        cols = (src + s)[:, None, :]
        batch = torch.arange(b, device=images.device)[:, None, None]
        # advanced indices (batch, rows, cols) around the channel slice: the result is [B, H, W, C]
        return padded[batch, :, rows, cols].permute(0, 3, 1, 2)
    angle, scale, dx, dy, flip = params
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    mirror = 1 - 2 * flip  # -1 negates the output's x before the rotation: a flip, then the rest
    # affine_grid maps output to input coordinates in [-1, 1]; a shift of d pixels is 2d/size there
    theta = torch.stack(
        [torch.stack([cos * mirror, -sin, -2 * dx / w], 1), torch.stack([sin * mirror, cos, -2 * dy / h], 1)], 1
    )
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    return F.grid_sample(images.to(torch.float32), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
