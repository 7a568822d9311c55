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


@contextmanager
def eval_bn(model: nn.Module):
    """Run ``model`` with every BatchNorm layer in eval mode (running statistics, nothing updated), as a test-time
    attack sees it; the layers' modes are restored on exit. In train mode an attack on a whole batch can move
    the batch's statistics, a perturbation that no single test image can make."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    try:
        for m in layers:
            m.eval()
        yield model
    finally:
        for m in layers:
            m.train()
