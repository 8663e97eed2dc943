"""The networks cnnkit trains and rebuilds: the seed tutorial's CNN (the default), torchvision's classification
builders adapted to the input (`nets.vision`), and the user's own module (`nets.user`, imported only when the user
names it). `build` makes the module a ModelConfig describes; everything after it (export, verify, bench, serve) works
on any of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnkit.errors import CheckpointError, DataError
from cnnkit.spec import SEED_ARCH, ModelConfig, is_user_arch

if TYPE_CHECKING:
    from cnnkit.train.nets.weights import Fitted

_TRUSTED: set[str] = set()  # user architectures named on this process's command line (or by the calling app)


def trust(arch: str) -> None:
    """Allow `build` to import the user's `package.module:factory` (the CLI calls it for `--arch`; an app embedding
    cnnkit calls it for the code it means to run). A path read from a checkpoint is never trusted by itself."""
    if is_user_arch(arch):
        _TRUSTED.add(arch)


def build(config: ModelConfig) -> Any:
    """A fresh (randomly initialised) module for `config`, or CheckpointError/DataError naming why not."""
    if config.arch == SEED_ARCH:
        from cnnkit.train.model import Net

        return Net(config)
    if is_user_arch(config.arch):
        if config.arch not in _TRUSTED:
            raise CheckpointError(
                f"this network is code ({config.arch}); cnnkit imports a module only when it is named on the command "
                f"line: pass --arch {config.arch} to run it"
            )
        from cnnkit.train.nets import user

        return user.build(config)
    from cnnkit.train.nets import vision

    return vision.build(config)


def check(config: ModelConfig, weights: str | None = None) -> Fitted | None:
    """DataError now, before any folder is made, when `config`'s network cannot be built for its input, or the
    weights to start from (`--weights`) do not fit it; what the weights fill in, when given."""
    try:
        net = build(config)
    except CheckpointError as exc:
        raise DataError(str(exc)) from None
    return None if weights is None else start_from(net, config, weights)


def start_from(net: Any, config: ModelConfig, spec: str) -> Fitted:
    """Load the weights `spec` names (a file, or "torchvision") into `net`, its head left fresh where it does not
    fit (`nets.weights.fit`)."""
    from cnnkit.train.nets import weights

    path = weights.locate(spec, config.arch)
    return weights.fit(net, weights.read(path), source=path.name)


def foldable(config: ModelConfig) -> bool:
    """Only the seed's network has fc1 and fc2 with nothing between them: the exact fold is its optimisation."""
    return config.arch == SEED_ARCH
