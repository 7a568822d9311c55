"""Training cost of whole runs side by side: each configuration a training script and its flags at the ``small``
scale of ``utils.reproduce``, timed in interleaved rounds so that a busy machine slows every one alike.

    python -m benchmarks.bench_variants --config main_empssl_free_adv \
        --config "main_empssl_free_adv --clean-weight 1" --config main_simclr_free_adv [--rounds 3] [--device cpu]

For each configuration: seconds per minibatch (every replay of it; the median over rounds), minibatches per run
(the scale's epochs of its 2,000 images), the projected training minutes of the run, and that as a ratio to the
first configuration. Data are random uint8 images on the device; the kNN monitor and checkpoints are left out,
as the training clock leaves them out.
"""
import argparse
import shlex
import statistics
import time

import torch

from benchmarks.common import print_table, scratch, sync
from experiments.scales import SCALES
from utils.core.cli import to_argv
from utils.core.files import machine
from utils.engine.config import entry_scripts, parse_config
from utils.engine.train import Trainer

SCRIPTS = {script: key for key, (script, _) in entry_scripts().items()}


def build(config, args):
    """(trainer, minibatches of the run) for one ``script [flags]`` at the small scale."""
    script, *flags = shlex.split(config)
    if script not in SCRIPTS:
        raise SystemExit(f"unknown script {script!r}; choose one of {', '.join(SCRIPTS)}")
    method, regime = SCRIPTS[script]
    defaults = entry_scripts()[method, regime][1]
    scale = SCALES["small"]
    epochs = max(1, round(defaults.get("epochs", 1) * scale.epoch_factor))
    argv = ["--device", args.device, "--epochs", str(epochs), "--out-dir", f"{args.out_dir}/{len(args.built)}",
            "--checkpoint-minutes", "0", "--knn-every", "0", *to_argv(scale.train), *flags]
    cfg, given, _ = parse_config(method, regime, None, argv)
    images = torch.randint(0, 256, (cfg["subset"], 3, 32, 32), dtype=torch.uint8)
    trainer = Trainer(cfg, given, images=images, labels=torch.arange(cfg["subset"]) % 10)
    args.built.append(config)
    return trainer, trainer.steps_per_epoch * cfg["epochs"]


def time_minibatch(trainer) -> float:
    batch = trainer.images[: trainer.cfg["batch_size"]]
    sync(trainer.device)
    start = time.perf_counter()
    loss, _ = trainer.train_step(batch)
    loss.item()
    sync(trainer.device)
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", required=True,
                   help='a script and its flags, e.g. "main_empssl_free_adv --clean-weight 1"')
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default=scratch("bench_variants"))
    args = p.parse_args(argv)
    args.built = []
    runs = [build(config, args) for config in args.config]
    for trainer, _ in runs:
        time_minibatch(trainer)  # warm-up
    seconds = [[] for _ in runs]
    for _ in range(args.rounds):
        for k, (trainer, _) in enumerate(runs):
            seconds[k].append(time_minibatch(trainer))
    minutes = [statistics.median(s) * n / 60 for s, (_, n) in zip(seconds, runs)]
    print(f"scale small ({SCALES['small'].note}); {machine(args.device)}; median of {args.rounds} interleaved rounds")
    print_table(["configuration", "s / minibatch", "minibatches", "training min", "vs first"],
                [[config, f"{statistics.median(s):.2f}", str(n), f"{m:.1f}", f"{m / minutes[0]:.2f}x"]
                 for config, s, (_, n), m in zip(args.config, seconds, runs, minutes)])
    return minutes


if __name__ == "__main__":
    main()
