"""Built-in harness plugin: the CIFAR-100 dataset and WRN models (Bharadhwaj et al.'s (2024) vision
setting). Shaped like a third-party plugin package."""
