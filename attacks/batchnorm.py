from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def frozen_bn_stats(model: nn.Module):
    """Run ``model`` in its current mode without moving BatchNorm running statistics.

    In training mode BatchNorm still normalises with the batch's own statistics (the loss the attack
    maximises is the one the training step sees); the running buffers and batch counters are copied on
    entry and written back in place on exit. Keeping the buffers in place (rather than detaching them) is
    what SyncBatchNorm and torch.compile need. Modules in eval mode keep using their running statistics.
    """
    saved = [
        (buf, buf.clone())
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
        for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buf is not None
    ]
    try:
        yield model
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
