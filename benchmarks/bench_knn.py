"""Cost of the kNN monitor next to one training epoch of each script at its defaults.

    python -m benchmarks.bench_knn [--scripts main_simclr ...] [--width 64] [--hidden-dim 4096] [--device cuda]

The epoch is estimated from the median of --steps timed training steps (``Trainer.train_step``: views,
forward, loss, backward, LARS; the regime's replays or attack included) at the script's own batch size,
times the steps in an epoch of --train-images. The monitor is what training runs at an epoch's end
(``Trainer.knn_accuracy``): ``pre`` features of --knn-train training and --knn-test test images in eval mode,
then the weighted kNN vote. Random uint8 images: neither cost depends on the pixels.
"""
import argparse

import torch

from benchmarks.bench_train import TRAIN_IMAGES, script_rows
from benchmarks.common import print_table, scratch, timeit
from utils.core.files import machine
from utils.engine.knn import KNNMonitor
from utils.engine.train import Trainer, parse_config


def random_images(n, generator):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)


def trainer_for(script, args, generator):
    method, regime, defaults, _ = script_rows()[script]
    batch = args.batch_size or defaults["batch_size"]
    argv = ["--device", args.device, "--width", str(args.width), "--hidden-dim", str(args.hidden_dim),
            "--batch-size", str(batch), "--out-dir", args.out_dir, "--checkpoint-minutes", "0"]
    cfg, given, _ = parse_config(method, regime, defaults, argv)
    trainer = Trainer(cfg, given, images=random_images(batch, generator))
    trainer.knn = KNNMonitor(random_images(args.knn_train, generator), torch.randint(0, 10, (args.knn_train,)),
                             random_images(args.knn_test, generator), torch.randint(0, 10, (args.knn_test,)),
                             args.knn_train, args.knn_test)
    return trainer


def bench(script, args, generator):
    trainer = trainer_for(script, args, generator)
    batch = trainer.images
    step_s = timeit(lambda: trainer.train_step(batch), trainer.device, repeats=args.steps)
    monitor_s = timeit(trainer.knn_accuracy, trainer.device, repeats=args.repeats)
    epoch_s = step_s * (args.train_images // len(batch))
    return [script, f"{len(batch)}", f"{step_s:.3f}", f"{epoch_s:.1f}", f"{monitor_s:.2f}",
            f"{100 * monitor_s / epoch_s:.2f} %"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scripts", nargs="+", default=list(script_rows()), choices=list(script_rows()))
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=None, help="override every script's batch")
    p.add_argument("--knn-train", type=int, default=10_000)
    p.add_argument("--knn-test", type=int, default=2_000)
    p.add_argument("--train-images", type=int, default=TRAIN_IMAGES, help="images in one epoch")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (median)")
    p.add_argument("--repeats", type=int, default=1, help="timed monitor runs (median)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out-dir", default=scratch("bench_knn"))
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    rows = [bench(script, args, g) for script in args.scripts]
    print(f"kNN monitor ({args.knn_train} train / {args.knn_test} test images) vs one epoch of {args.train_images} "
          f"images: width {args.width}, hidden {args.hidden_dim}, {machine(args.device)}")
    print_table(["script", "batch", "step s", "epoch s", "monitor s", "monitor / epoch"], rows)


if __name__ == "__main__":
    main()
