"""Weights from elsewhere: a state dict in a safetensors file, a torch `.pt`/`.pth` file (read with
`weights_only=True`: tensors, never code), or torchvision's own pretrained file from the local torch hub cache
(`--weights torchvision`; nothing is downloaded at run time).

`fit` puts them into a freshly built network: every tensor whose name and shape match is loaded; a first convolution
pretrained on 3 channels is summed to 1 (or spread over 3), the usual adaptation; what does not fit (the classifier
head for other classes, a stem changed for small inputs) keeps its fresh initialisation and is reported, so a
fine-tune replaces the head. `strict` (export of a state dict trained elsewhere) accepts nothing but a full match.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.errors import DataError, first_line

TORCHVISION = "torchvision"  # `--weights torchvision`: the architecture's default pretrained file, from the hub cache
SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
CONTAINERS = ("state_dict", "model_state_dict", "model")  # training scripts' usual wrappers around the state dict


@dataclass(frozen=True, kw_only=True)
class Fitted:
    """What `fit` did: tensors loaded as they were, adapted to the input's channels, and left fresh."""

    source: str
    loaded: int
    adapted: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    unused: int = 0  # tensors in the file that the network has no place for
    # the tensors read from the file: fitting them again into another build of the network needs no second read
    state: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "adapted": self.adapted, "fresh": self.fresh,
                "unused": self.unused}  # fmt: skip


def _names(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def locate(spec: str, arch: str) -> Path:
    """The file `--weights spec` means for `arch`: the path itself, or for "torchvision" the architecture's default
    pretrained file in the local torch hub cache. DataError naming what is missing."""
    if spec != TORCHVISION:
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"{path}: weights file not found")
        return path
    import torch
    import torchvision.models as tvm

    try:
        default = tvm.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise DataError(f"--weights torchvision: torchvision has no pretrained weights for {arch!r}") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(default.url)
    if not path.is_file():
        raise DataError(
            f"--weights torchvision: {arch}'s {default.name} weights are not in the local torch hub cache ({path}); "
            f"cnnkit downloads nothing while training: put {path.name} there, or pass --weights FILE"
        )
    return path


def read(path: Path) -> dict[str, Any]:
    """The state dict in `path` (tensors only; DataError naming the file and what is wrong)."""
    import torch

    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{path}: weights must be a {', '.join(SUFFIXES)} file (a state dict), not {path.suffix!r}")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files, pickles holding code (refused by weights_only): one line
        raise DataError(f"{path}: not a readable state dict ({first_line(exc)[:160]})") from None
    while isinstance(state, dict):
        inner = next((state[k] for k in CONTAINERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not state:
        raise DataError(f"{path}: holds no state dict (a mapping of names to tensors)")
    tensors = {str(k).removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise DataError(f"{path}: holds no tensors")
    return tensors


def fit(model: Any, state: dict[str, Any], *, source: str, strict: bool = False) -> Fitted:
    """Load `state` into `model` (see the module's doc); DataError when too little of it fits (another network's
    file), or with `strict` when anything does not."""
    import torch

    own = model.state_dict()
    first = _first_conv_weight(model)
    taken: dict[str, Any] = {}
    adapted, fresh = [], []
    for key, target in own.items():
        given = state.get(key)
        if given is None:
            fresh.append(key)
        elif tuple(given.shape) == tuple(target.shape):
            taken[key] = given.to(target.dtype)
        elif not strict and key == first and _channels_only(given, target):
            taken[key] = _adapt_channels(given, target.shape[1]).to(target.dtype)
            adapted.append(key)
        else:
            fresh.append(key)
    unused = len(set(state) - set(own))
    if strict and (fresh or unused):
        what = f"the network's {_names(fresh)} not in the file or of another shape" if fresh else ""
        extra = f"{unused} tensors in the file the network has no place for" if unused else ""
        raise DataError(f"{source}: the weights do not fit the network ({'; '.join(p for p in (what, extra) if p)})")
    if len(taken) * 2 < len(own):
        raise DataError(
            f"{source}: only {len(taken)} of the network's {len(own)} tensors match the file by name and shape "
            "(weights of another network?)"
        )
    with torch.no_grad():
        model.load_state_dict({**own, **taken}, strict=True)
    return Fitted(
        source=source, loaded=len(taken) - len(adapted), adapted=adapted, fresh=fresh, unused=unused, state=state
    )


def _first_conv_weight(model: Any) -> str | None:
    from torch import nn

    return next((f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _channels_only(given: Any, target: Any) -> bool:
    """The same convolution but for its input channels (3 pretrained, 1 wanted, or the other way)."""
    return given.dim() == 4 and given.shape[0] == target.shape[0] and given.shape[2:] == target.shape[2:]


def _adapt_channels(weight: Any, channels: int) -> Any:
    """Sum an RGB kernel into one grayscale channel, or spread one channel evenly over `channels`."""
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    return weight.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1)


def head_split(model: Any) -> int:
    """How many of `model.parameters()` (in order) are the body: all but those of the module holding the last
    parameter (the classifier head, which a fine-tune trains at the full learning rate)."""
    params = list(model.parameters())
    owner = next(m for m in reversed(list(model.modules())) if any(p is params[-1] for p in m.parameters(False)))
    return len(params) - len(list(owner.parameters(False)))
