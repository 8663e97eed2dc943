"""`train()`: one process or a torchrun rank. Checks the inputs, prepares the run folder, builds the one plan
(`train.plan`) and hands it to the loop; checkpoint and resume state are written after every epoch."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cnnkit.data.dataset import Dataset
from cnnkit.train import distributed, loop, plan
from cnnkit.train.config import TrainConfig, TrainResult
from cnnkit.train.progress import Progress
from cnnkit.train.rundir import check_out_dir, prepare_out_dir


def train(
    dataset: Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    progress: bool | Progress = True,
    resume_run: bool = False,
    force: bool = False,
    tuning: dict[str, Any] | None = None,
    plot: bool = True,
) -> TrainResult:
    """Train the seed CNN on `dataset`; checkpoint after every epoch; Ctrl-C keeps the last completed epoch.

    Under torchrun (WORLD_SIZE > 1) this runs on every rank: DDP over NCCL (CUDA) or gloo (CPU), rank 0 writing.
    `resume_run` continues the run in `out_dir` from its last completed epoch (the same recipe and data, or
    CheckpointError); otherwise `out_dir` must be empty unless `force`. `tuning` (how the recipe was chosen, see
    `train.tune`) is recorded in the checkpoint; a resumed run keeps its own. `plot=False`: no curves.png.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    cfg = cfg.sized(len(dataset.train_labels))  # epochs None: the default budget for this much data
    world = distributed.from_env()
    fresh = world.is_main and not resume_run
    if fresh:
        check_out_dir(out_dir, force)  # refuse early; the folder itself is made once the inputs are checked
    checked = plan.check(dataset, cfg, world)
    created = fresh and not out_dir.exists()
    if fresh:
        prepare_out_dir(out_dir, force)
    world = distributed.init(world, checked.device.type)
    try:
        the_plan = plan.build(
            dataset,
            cfg,
            out_dir,
            world,
            checked=checked,
            resume_run=resume_run,
            t_start=t_start,
            tuning=tuning,
            plot=plot,
        )
        return loop.run(the_plan, progress)
    finally:
        distributed.shutdown(world)
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a run that saved nothing leaves no empty folder
