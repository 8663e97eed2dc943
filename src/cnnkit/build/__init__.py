"""The torch side: the model, datasets, training, checkpoints, export and parity. Needs the `train` extra.

Modules here import torch inside functions where they can, so that listing commands stays cheap."""
