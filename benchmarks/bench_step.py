"""One full training step of each registered regime against the forward + backward of the model alone.

    python -m benchmarks.bench_step [--method empssl] [--width 16] [--batch-size 32] [--num-views 16] [--device cpu]

The full step is what the training loop runs: index the device-resident uint8 batch, cut the views
(MultiViewAugment), forward, loss, backward and the LARS step; PGD-5 crafts the perturbation first, a free
step replays the minibatch --replays times (reported per replay). "Model alone" is forward + backward of the
encoder on the same (already cut) views, with a plain sum as the loss.
"""
import argparse
from pathlib import Path

import torch

from benchmarks.common import print_table, scratch, timeit
from experiments.labels import regime_words
from utils.core.files import machine
from utils.engine.train import Trainer, parse_config
from utils.methods import METHODS
from utils.regimes import REGIMES

MULTI_VIEW = next(name for name, method in METHODS.items() if method.views is None)


def make_trainer(regime, args, images, teacher=None):
    argv = ["--device", args.device, "--width", str(args.width), "--hidden-dim", str(args.hidden_dim),
            "--batch-size", str(args.batch_size), "--out-dir", args.out_dir, "--checkpoint-minutes", "0"]
    argv += ["--teacher", str(teacher)] if REGIMES[regime].needs_teacher else []
    if METHODS[args.method].views is None:
        argv += ["--num-views", str(args.num_views)]
    cfg, given, _ = parse_config(args.method, regime, {"epochs": 1, "batch_size": args.batch_size}, argv)
    return Trainer(cfg, given, images=images)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=list(METHODS), default=MULTI_VIEW,
                   help="(default: the first registered method that takes --num-views)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--hidden-dim", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-views", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out-dir", default=scratch("bench_step"))
    args = p.parse_args(argv)
    images = torch.randint(0, 256, (max(1024, args.batch_size), 3, 32, 32), dtype=torch.uint8)
    rows, base = [], None
    teacher = Path(args.out_dir) / "teacher.pt"  # the standard regime's fresh encoder, for the regimes that need one
    for regime, regime_cls in REGIMES.items():
        t = make_trainer(regime, args, images, teacher)
        if regime == "standard":
            t.checkpoint((teacher.name,))
        batch_index = torch.arange(args.batch_size, device=t.device)
        if base is None:
            views = t.augment(t.images[batch_index])

            def model_alone():
                with t.autocast():
                    out = t.net(views)
                out.float().sum().backward()

            base = timeit(model_alone, args.device, args.repeats)
            aug = timeit(lambda: t.augment(t.images[batch_index]), args.device, args.repeats)
            rows.append(["model alone (fwd+bwd)", f"{base * 1e3:.1f}", "1.00x"])
            rows.append(["augmentation only", f"{aug * 1e3:.1f}", f"{aug / base:.2f}x"])
        step = timeit(lambda: t.train_step(t.images[batch_index]), args.device, args.repeats)
        per = step / regime_cls.steps_per_batch(t.cfg)
        rows.append([f"{', '.join(regime_words(t.cfg))}, per optimizer step", f"{per * 1e3:.1f}", f"{per / base:.2f}x"])
    print(f"{METHODS[args.method].display}, width {args.width}, hidden {args.hidden_dim}, batch {args.batch_size} x "
          f"{t.cfg['num_views']} views, {machine(args.device)}")
    print_table(["what", "ms", "vs model alone"], rows)


if __name__ == "__main__":
    main()
