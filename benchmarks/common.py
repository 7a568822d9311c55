"""Timing helpers shared by the benchmarks."""
import tempfile
import time
from pathlib import Path

import torch


def scratch(name: str) -> str:
    """A benchmark's default folder for the run folders it throws away: in the system's temporary directory."""
    return str(Path(tempfile.gettempdir()) / name)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device="cpu", repeats=5, warmup=1):
    """Median seconds per call over ``repeats`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
