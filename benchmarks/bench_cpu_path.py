"""The CPU's fastest path for a training step: float32 contiguous, float32 channels-last, bf16 autocast (the stem
in float32) contiguous and channels-last, each timed on the same views, as ratios in one run; and for an
evaluation's attack pass, float32 contiguous and channels-last.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_cpu_path [--scales small medium] [--parts step attack] [--repeats 3]
        [--json FILE]

A step is CF-AMC-SSL's free replay at a scale of ``experiments.scales``: the scale's width and projector, a batch
of 100 images (--batch-size) x 16 views, forward, loss, backward and the LARS step, as the trainer runs it. Timings
vary with the machine (AMX on recent Intel Xeons speeds up bf16 and channels-last), so the CPU is named with the
numbers. An attack pass is what PGD and AutoAttack repeat: a linear head on the frozen encoder's features of
--test-images images, forward and backward to the images.
"""
import argparse
import json

import torch

from benchmarks.common import print_table, scratch, timeit
from experiments.scales import SCALES
from utils.core.cli import to_argv
from utils.core.files import machine
from utils.engine.blocks import encoder_for
from utils.engine.config import parse_config
from utils.engine.layout import FORMATS
from utils.engine.train import Trainer
from utils.evaluation.protocols import Classifier, linear_head

SETTINGS = {"float32, contiguous": ("fp32", "off"), "float32, channels-last": ("fp32", "on"),
            "bf16 autocast, contiguous": ("bf16", "off"), "bf16 autocast, channels-last": ("bf16", "on")}


def scale_sizes(scale: str, width=None) -> dict:
    """{'width': .., 'hidden_dim': ..} of the scale (``width`` instead of its width, when given)."""
    sizes = {key: SCALES[scale].train[key] for key in ("width", "hidden_dim")}
    return {**sizes, **({"width": width} if width else {})}


def trainer_for(scale: str, precision: str, channels_last: str, out_dir: str, images, width=None) -> Trainer:
    """A trainer of the scale's sizes (``width`` instead of its width, when given) on ``images``, one batch of them."""
    sizes = scale_sizes(scale, width)
    argv = ["--device", "cpu", "--precision", precision, "--channels-last", channels_last,
            "--batch-size", str(len(images)), "--num-views", "16", "--replays", "1", "--knn-every", "0",
            "--out-dir", out_dir, *to_argv(sizes)]
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


def attack_seconds(scale: str, repeats: int, width=None, images=250) -> dict:
    """Seconds of one attack pass on ``images`` random test images, in each float32 layout."""
    sizes = scale_sizes(scale, width)
    encoder = encoder_for("empssl", width=sizes["width"], hidden_dim=sizes["hidden_dim"])
    model = Classifier(encoder.eval().requires_grad_(False), linear_head(encoder.feature_dim("pre"), 10), "pre").eval()
    x = torch.rand(images, 3, 32, 32, requires_grad=True)
    times = {}
    for name, layout in (("float32, contiguous", "off"), ("float32, channels-last", "on")):
        model.to(memory_format=FORMATS[layout])
        times[name] = timeit(lambda: torch.autograd.grad(model(x).sum(), x), "cpu", repeats)
        print(f"{scale}, attack pass, {name}: {times[name]:.2f} s", flush=True)
    return times


def speedup_rows(results: dict) -> list:
    """Table rows (scale, setting, seconds, speed-up over the first setting) of {scale: {setting: seconds}}."""
    rows = []
    for scale, times in results.items():
        base = next(iter(times.values()))
        rows += [[scale, name, f"{s:.2f}", f"{base / s:.2f}x"] for name, s in times.items()]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", nargs="+", choices=list(SCALES), default=["small", "medium"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--width", type=int, default=None,
                   help="the ResNet's width instead of the scale's (channels-last on the CPU needs 8 or more at 32x32)")
    p.add_argument("--batch-size", type=int, default=100, help="images per step, 16 views each")
    p.add_argument("--test-images", type=int, default=250, help="images per attack pass")
    p.add_argument("--parts", nargs="+", choices=("step", "attack"), default=["step", "attack"],
                   help="what to time (without native bf16, as on AVX2 CPUs, the bf16 steps take minutes)")
    p.add_argument("--out-dir", default=scratch("bench_cpu_path"), help="scratch run folders (nothing is saved)")
    p.add_argument("--json", default=None, help="also write the measurements here")
    args = p.parse_args(argv)
    steps = {scale: measure(scale, args.repeats, args.out_dir, args.width, args.batch_size)
             for scale in args.scales if "step" in args.parts}
    attacks = {scale: attack_seconds(scale, args.repeats, args.width, args.test_images)
               for scale in args.scales if "attack" in args.parts}
    print(machine("cpu"))
    if steps:
        print(f"CF-AMC-SSL free replay, {args.batch_size} images x 16 views")
        print_table(["scale", "setting", "s / step", "speed-up"], speedup_rows(steps))
    if attacks:
        print(f"Attack pass (linear head on the frozen encoder, to the images), {args.test_images} images")
        print_table(["scale", "setting", "s / pass", "speed-up"], speedup_rows(attacks))
    results = {"machine": machine("cpu"), "seconds_per_step": steps, "seconds_per_attack_pass": attacks}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
