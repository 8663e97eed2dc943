"""cnnkit: take a small image CNN from training to a verified, measured inference service."""

__version__ = "0.1.0"
