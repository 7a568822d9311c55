"""TCR forward + backward: the batched m x m Gram form against a loop of d x d logdets (the original code).

    python -m benchmarks.bench_tcr [--views 16] [--m 100] [--d 1024] [--device cpu]
"""
import argparse

import torch
import torch.nn.functional as F

from benchmarks.common import print_table, timeit
from losses import total_coding_rate
from utils.core.files import machine


def tcr_loop_dxd(z, eps):
    out = []
    for zv in z:
        m, d = zv.shape
        out.append(0.5 * torch.logdet(torch.eye(d, device=z.device) + d / (m * eps) * zv.T @ zv))
    return torch.stack(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views", type=int, default=16)
    p.add_argument("--m", type=int, default=100)
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    z0 = F.normalize(torch.randn(args.views, args.m, args.d, device=args.device), dim=-1)

    def run(fn):
        def step():
            z = z0.clone().requires_grad_(True)
            fn(z, 0.2).sum().backward()
        return step

    gram = timeit(run(total_coding_rate), args.device, args.repeats)
    loop = timeit(run(tcr_loop_dxd), args.device, args.repeats)
    diff = (total_coding_rate(z0).double() - tcr_loop_dxd(z0.double(), 0.2)).abs().max().item()
    print(f"TCR forward+backward, {args.views} views x m={args.m} x d={args.d}, {machine(args.device)}")
    print_table(["form", "ms", "speed-up"], [["Gram m x m, batched", f"{gram * 1e3:.2f}", f"{loop / gram:.1f}x"],
                                             ["loop of d x d logdet", f"{loop * 1e3:.2f}", "1.0x"]])
    print(f"max |difference| of the values (float32 Gram vs float64 d x d): {diff:.2e}")


if __name__ == "__main__":
    main()
