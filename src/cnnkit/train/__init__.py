"""The torch side that makes checkpoints (the `train` extra): the model, training data on the device, augmentation,
steps, the loop, distributed training, resume, checkpoints, training precision, progress and curves.

Nothing here imports export; the modules import torch inside functions where they can, so `cnnkit --help` and
`cnnkit train`'s missing-extra message stay cheap."""
