"""Built-in harness plugin: the CIFAR-100 dataset and WRN models (seed 000's vision
setting). Shaped like a third-party plugin package."""
