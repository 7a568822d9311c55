"""Seconds to evaluate the test set: clean accuracy and PGD-20 at 4/255 and 8/255, end to end.

    python -m benchmarks.bench_eval [--n 10000] [--batch-size 500] [--device cuda] [--width 64]

A randomly initialised encoder with a linear head on random images: the cost of the attack does not depend
on the weights.
"""
import argparse
import time

import torch
from torch import nn

from benchmarks.bench_step import MULTI_VIEW
from benchmarks.common import print_table, sync
from utils.core.files import machine
from utils.engine.blocks import encoder_for
from utils.evaluation.evaluate import robust_accuracy
from utils.evaluation.protocols import Classifier


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=4096)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    encoder = encoder_for(MULTI_VIEW, width=args.width,
                          hidden_dim=args.hidden_dim).to(device).eval().requires_grad_(False)
    head = nn.Linear(args.hidden_dim, 10).to(device).requires_grad_(False)
    model = Classifier(encoder, head, "pre").eval()
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.n,))
    sync(device)
    start = time.perf_counter()
    robust_accuracy(model, images, labels, [4 / 255, 8 / 255], args.steps, args.batch_size, device)
    sync(device)
    seconds = time.perf_counter() - start
    passes = args.n * (1 + 2 * (args.steps + 1))
    print(f"evaluation of {args.n} images, width {args.width}, {machine(args.device)}")
    print_table(["what", "seconds", "images/s", "fwd+bwd passes/s"],
                [[f"clean + PGD-{args.steps} at 4/255 and 8/255", f"{seconds:.1f}", f"{args.n / seconds:.0f}",
                  f"{passes / seconds:.0f}"]])


if __name__ == "__main__":
    main()
