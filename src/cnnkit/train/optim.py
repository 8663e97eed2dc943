"""The optimizer and its schedule: AdamW under a one-cycle learning rate; fine-tuning from weights (`--weights`)
trains the body at a fraction of the head's rate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from cnnkit.train.nets import weights

if TYPE_CHECKING:
    from cnnkit.train.config import TrainConfig
    from cnnkit.train.plan import TrainPlan


def make(model: Any, cfg: TrainConfig, plan: TrainPlan, total_steps: int, *, fused: bool) -> tuple[Any, Any]:
    """(AdamW, its schedule): one-cycle over `total_steps`, constant for a smoke run too short to warm up."""
    groups, peaks = param_groups(model, cfg, plan)
    # fused AdamW: one kernel for the whole update on CUDA (the foreach default elsewhere)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
    if total_steps >= 10:
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=total_steps, pct_start=0.25)
    else:  # too few steps for a warm-up/anneal cycle (smoke runs)
        sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    return opt, sched


def param_groups(model: Any, cfg: TrainConfig, plan: TrainPlan) -> tuple[list[dict[str, Any]], list[float]]:
    """The parameter groups and their peak learning rates: one group; or, fine-tuning from weights (`--weights`, or
    a resumed run that did), the body at `body_lr_scale` of lr and the head (the last layer) at lr. The parameters
    stay in the model's order either way: the resume state is indexed by it."""
    params = list(model.parameters())
    resumed = plan.resumed
    tuning = len(resumed.state.param_groups) == 2 if resumed is not None else plan.fitted is not None
    if not tuning:
        return [{"params": params}], [cfg.lr]
    split = weights.head_split(model)
    body = cfg.lr * cfg.body_lr_scale
    return [{"params": params[:split], "lr": body}, {"params": params[split:], "lr": cfg.lr}], [body, cfg.lr]
