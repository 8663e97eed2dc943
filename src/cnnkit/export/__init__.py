"""The torch side that makes artefacts (the `train` extra): ONNX and TorchScript export, reduced-precision variants,
artefact loaders, parity and the accuracy gate, Triton model repositories. May import train, never the reverse."""
