"""torchvision's classification builders (`resnet18`, `mobilenet_v3_small`, `efficientnet_b0`, ...: any that
`torchvision.models.get_model` builds with `num_classes`), adapted to cnnkit's inputs: the first convolution takes
the data's channels, and below SMALL_INPUT px it keeps the full resolution (stride 1; ResNet's max-pool removed), as
CIFAR-sized variants of these networks do."""

from __future__ import annotations

from typing import Any

from cnnkit.errors import CheckpointError
from cnnkit.spec import ModelConfig

SMALL_INPUT = 96  # below this side, the stem's first downsampling is dropped
MIN_SIDE = 16
BN_MOMENTUM = 0.1  # PyTorch's default; the builders that set less get this (their statistics lag a short run)


def names() -> list[str]:
    """The classification builders torchvision has."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def build(config: ModelConfig) -> Any:
    import torch
    from torch import nn

    available = names()
    if config.arch not in available:
        close = [n for n in available if n.startswith(config.arch[:4])][:6]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise CheckpointError(
            f"unknown architecture {config.arch!r}{hint}; expected seed, a torchvision classification model, or "
            "package.module:factory"
        )
    if config.image_size < MIN_SIDE:
        raise CheckpointError(f"{config.arch} needs inputs of at least {MIN_SIDE} px, got {config.image_size}")
    import torchvision.models as tvm

    try:
        model = tvm.get_model(config.arch, weights=None, num_classes=config.num_classes)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"torchvision cannot build {config.arch}: {str(exc)[:160]}") from None
    small = config.image_size < SMALL_INPUT
    parent, name, conv = _first_conv(model)
    if conv.in_channels != config.in_channels or (small and conv.stride != (1, 1)):
        stride = 1 if small else conv.stride
        kernel = 3 if small and conv.kernel_size[0] > 3 else conv.kernel_size
        padding = 1 if small and conv.kernel_size[0] > 3 else conv.padding
        new = nn.Conv2d(config.in_channels, conv.out_channels, kernel, stride=stride, padding=padding,
                        bias=conv.bias is not None)  # fmt: skip
        setattr(parent, name, new)
    if small and isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        model.maxpool = nn.Identity()
    for bn in model.modules():  # MobileNetV3's and EfficientNet's ImageNet recipe: momentum 0.01 over ~10^5 steps
        if isinstance(bn, nn.modules.batchnorm._BatchNorm) and (bn.momentum or 0.1) < BN_MOMENTUM:
            bn.momentum = BN_MOMENTUM  # so the running statistics follow a run of hundreds of steps
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, config.in_channels, config.image_size, config.image_size))
    if out.shape != (1, config.num_classes):
        raise CheckpointError(f"{config.arch} gives outputs of shape {tuple(out.shape)}, not [N, {config.num_classes}]")
    return model.train()


def _first_conv(model: Any) -> tuple[Any, str, Any]:
    """(parent module, attribute name, the module) of the first Conv2d in definition order."""
    from torch import nn

    for full, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, name = full.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, name, module
    raise CheckpointError("the network has no Conv2d to take the input's channels")
