"""Which memory layout a run's convolutions use, ``--channels-last auto|on|off``, chosen per machine: on CUDA
channels-last; on the CPU whichever a short probe measures faster (AMX makes channels-last faster on recent
Intel Xeons; on an AVX2 AMD EPYC it pays from width 16), never below the width where PyTorch's CPU kernel fails.
Training and evaluation both choose here."""
import time

import torch

from utils.core.errors import UsageError

FORMATS = {"off": torch.contiguous_format, "on": torch.channels_last}


# PyTorch's CPU backward in channels-last corrupts the heap at narrow widths: measured with torch 2.14.1 on an AVX2
# AMD EPYC, an abort, a segfault or a hang, with one thread or two, at width 4 on 32x32 views and at width 8 on
# 48x48 views and larger (width 8 at 32x32 and widths 12 to 32 up to 128x128 ran).
def cpu_channels_last_min_width(view_size: int) -> int:
    """The narrowest ResNet whose channels-last backward ran on the CPU at ``view_size`` x ``view_size`` views."""
    return 8 if view_size <= 32 else 12


def choose_layout(requested: str, device, width: int, view_size: int, probe) -> str:
    """--channels-last ``requested`` as 'on' or 'off' for a ResNet of ``width`` on ``view_size`` inputs.
    ``probe()`` returns ``layout_seconds``' timings; it is called only for 'auto' on the CPU."""
    least = cpu_channels_last_min_width(view_size)
    if device.type == "cpu" and width < least:
        if requested == "on":
            raise UsageError(f"--channels-last on needs --width {least} or more on the CPU at {view_size}px "
                             f"views: PyTorch's CPU kernel corrupts memory there; use --channels-last off")
        return "off"
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "on"
    seconds = probe()
    return "on" if seconds["on"] < seconds["off"] else "off"


def layout_seconds(model, x, repeats=2) -> dict:
    """{'off': s, 'on': s}: the best of ``repeats`` forward + backward passes of ``model`` on ``x`` in each memory
    layout, after one pass to warm up. The backward is an attack's (to ``x``) when ``x`` requires a gradient,
    else a training step's (to the parameters); nothing is accumulated into ``.grad``, no random stream moves,
    and ``model`` is left contiguous."""
    wrt = [x] if x.requires_grad else [p for p in model.parameters() if p.requires_grad]
    seconds = {}
    with torch.random.fork_rng(devices=[]):
        for layout, fmt in FORMATS.items():
            model, xl = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
            times = []
            for _ in range(repeats + 1):
                started = time.perf_counter()
                torch.autograd.grad(model(xl).float().sum(), wrt, allow_unused=True)
                times.append(time.perf_counter() - started)
            seconds[layout] = min(times[1:])
    model.to(memory_format=torch.contiguous_format)
    return seconds
