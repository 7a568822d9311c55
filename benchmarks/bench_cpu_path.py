"""The CPU's fastest path for a training step: float32 contiguous, float32 channels-last, bf16 autocast (the stem
in float32) contiguous and channels-last, each timed on the same views, as ratios in one run.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_cpu_path [--scales small medium] [--repeats 3] [--json FILE]

A step is CF-AMC-SSL's free replay at a scale of ``experiments.scales``: the scale's width and projector, a batch
of 100 images (--batch-size) x 16 views, forward, loss, backward and the LARS step, as the trainer runs it. Timings
vary with the machine (AMX on recent Intel Xeons speeds up bf16 and channels-last), so the CPU is named with the
numbers.
"""
import argparse
import json

import torch

from experiments.scales import SCALES
from utils.config import parse_config
from utils.run import machine
from utils.train import Trainer

from .common import print_table, timeit

SETTINGS = {"float32, contiguous": ("fp32", "off"), "float32, channels-last": ("fp32", "on"),
            "bf16 autocast, contiguous": ("bf16", "off"), "bf16 autocast, channels-last": ("bf16", "on")}


def trainer_for(scale: str, precision: str, channels_last: str, out_dir: str, images, width=None) -> Trainer:
    """A trainer of the scale's sizes (``width`` instead of its width, when given) on ``images``, one batch of them."""
    flags = SCALES[scale].train
    sizes = {flag: value for flag, value in zip(flags[::2], flags[1::2]) if flag in ("--width", "--hidden-dim")}
    sizes.update({"--width": str(width)} if width else {})
    argv = ["--device", "cpu", "--precision", precision, "--channels-last", channels_last,
            "--batch-size", str(len(images)), "--num-views", "16", "--replays", "1", "--knn-every", "0",
            "--out-dir", out_dir,
            *[arg for item in sizes.items() for arg in item]]
    cfg, given, _ = parse_config("empssl", "free", {"epochs": 1}, argv)
    return Trainer(cfg, given, images=images)


def seconds_per_step(trainer: Trainer, repeats: int) -> float:
    """Median seconds of the trainer's step on one batch, after a first step (allocations, kernel choices)."""
    return timeit(lambda: trainer.train_step(trainer.images), "cpu", repeats)


def measure(scale: str, repeats: int, out_dir: str, width=None, batch_size=100) -> dict:
    """Seconds per step of every setting, each printed when measured (a CPU without native bf16 takes minutes)."""
    images = torch.randint(0, 256, (batch_size, 3, 32, 32), dtype=torch.uint8)
    times = {}
    for name, (p, c) in SETTINGS.items():
        times[name] = seconds_per_step(trainer_for(scale, p, c, f"{out_dir}/{scale}-{p}-{c}", images, width), repeats)
        print(f"{scale}, {name}: {times[name]:.2f} s / step", flush=True)
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", nargs="+", choices=list(SCALES), default=["small", "medium"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--width", type=int, default=None,
                   help="the ResNet's width instead of the scale's (channels-last on the CPU needs 8 or more at 32x32)")
    p.add_argument("--batch-size", type=int, default=100, help="images per step, 16 views each")
    p.add_argument("--out-dir", default="/tmp/bench_cpu_path", help="scratch run folders (nothing is saved)")
    p.add_argument("--json", default=None, help="also write the measurements here")
    args = p.parse_args(argv)
    results = {scale: measure(scale, args.repeats, args.out_dir, args.width, args.batch_size) for scale in args.scales}
    rows = []
    for scale, times in results.items():
        base = times["float32, contiguous"]
        rows += [[scale, name, f"{s:.2f}", f"{base / s:.2f}x"] for name, s in times.items()]
    print(f"CF-AMC-SSL free replay, {args.batch_size} images x 16 views; {machine('cpu')}")
    print_table(["scale", "setting", "s / step", "speed-up"], rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine("cpu"), "seconds_per_step": results}, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
