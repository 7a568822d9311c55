from contextlib import contextmanager

from torch import nn


@contextmanager
def frozen_bn_stats(model: nn.Module):
    """Run ``model`` in its current mode without moving BatchNorm running statistics.

    In training mode BatchNorm still normalises with the batch's own statistics (the loss the attack
    maximises is the one the training step sees), but with the running buffers detached for the duration
    it neither updates them nor counts the batch. Modules in eval mode keep using their running statistics.
    """
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            saved.append((m, m.running_mean, m.running_var, m.num_batches_tracked))
            m.running_mean = m.running_var = m.num_batches_tracked = None
    try:
        yield model
    finally:
        for m, mean, var, count in saved:
            m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count
