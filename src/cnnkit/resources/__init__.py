"""Files shipped with cnnkit, read through importlib.resources: the bundled MNIST sample and a tiny probe model."""
