"""Augmentation moves pixels where it says: exact shifts, exact mirrors, and flips that leave the other draws alone."""

import numpy as np
import pytest
import torch

from cnnkit.train import augment


def _images(n=3, size=8):
    return torch.from_numpy(np.random.default_rng(0).integers(1, 256, (n, 1, size, size), dtype=np.uint8))


def _params(n, dx=0, dy=0, flip=0, angle=0.0):
    return torch.tensor([[angle] * n, [1.0] * n, [float(dx)] * n, [float(dy)] * n, [float(flip)] * n])


def test_integer_shift_and_flip_are_exact_pixel_moves():
    x = _images()
    aug = augment.Augment(shift=2, flip=True)
    flipped = augment.apply(aug, x, _params(3, flip=1))
    assert flipped.dtype == torch.uint8 and torch.equal(flipped, x.flip(-1))
    assert torch.equal(augment.apply(aug, x, _params(3)), x)
    moved = augment.apply(aug, x, _params(3, dx=1, dy=-2))  # content moves left 1 and down 2, zeros come in
    want = torch.zeros_like(x)
    want[:, :, 2:, :-1] = x[:, :, :-2, 1:]
    assert torch.equal(moved, want)
    both = augment.apply(aug, x, _params(3, dx=1, flip=1))  # mirrored, then moved
    want = torch.zeros_like(x)
    want[:, :, :, :-1] = x.flip(-1)[:, :, :, 1:]
    assert torch.equal(both, want)


def test_the_rotation_path_mirrors_the_same_way():
    x = _images()
    aug = augment.Augment(rotate=10.0, flip=True)
    out = augment.apply(aug, x, _params(3, flip=1))  # no angle: bilinear at pixel centres is exact
    assert out.dtype == torch.float32 and torch.allclose(out, x.flip(-1).float(), atol=1e-3)


def test_flips_are_drawn_last_so_a_run_without_them_draws_the_same():
    plain = augment.draw(augment.Augment(shift=2, rotate=10.0), 500, torch.Generator().manual_seed(3))
    mirrored = augment.draw(augment.Augment(shift=2, rotate=10.0, flip=True), 500, torch.Generator().manual_seed(3))
    assert torch.equal(plain[:4], mirrored[:4]) and not plain[4].any()
    assert 0.4 < mirrored[4].mean().item() < 0.6 and set(mirrored[4].tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("rotate", [0.0, 10.0], ids=["shift", "rotate"])
def test_every_channel_of_an_rgb_image_moves_the_same_way(rotate):
    aug = augment.Augment(shift=2, rotate=rotate, flip=True)
    x = torch.randint(0, 256, (6, 3, 12, 12), dtype=torch.uint8)
    params = augment.draw(aug, 6, torch.Generator().manual_seed(1))
    out = augment.apply(aug, x, params)
    assert out.shape == (6, 3, 12, 12)
    for c in range(3):
        torch.testing.assert_close(augment.apply(aug, x[:, c : c + 1].contiguous(), params), out[:, c : c + 1])
