"""Learning affinities with PyTorch (the optional ``train`` extra): U-Net, targets, losses, data,
training and prediction. Torch is imported only by the modules that need it."""
