"""Multi-view augmentation throughput: the batched path (``MultiViewAugment``, torch's threads on all cores, or
a GPU) against torchvision's per-image PIL pipeline (``ReferenceAugment``) in a DataLoader with one worker
process per core, on the same random uint8 32x32 images.

    python -m benchmarks.bench_augment [--images 100] [--views 16] [--repeats 5] [--method empssl] [--device cpu]
"""
import argparse
import os
import time

import torch
from torch.utils.data import DataLoader, Dataset

from augment import tensor_to_pil
from benchmarks.bench_step import MULTI_VIEW
from benchmarks.common import print_table, sync
from utils.core.files import machine
from utils.engine.blocks import augment_for, reference_for
from utils.methods import METHODS

# Images per loader batch: small enough that every worker gets batches of the 100-image set.
LOADER_BATCH = 10


class ViewsOfImages(Dataset):
    def __init__(self, images, augment):
        self.images = [tensor_to_pil(image) for image in images]
        self.augment = augment

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.augment(self.images[index])


def interleaved_times(fns, device, repeats):
    """Seconds per call of each function, ``repeats`` times after a warm-up call, timed in alternation so
    that load from elsewhere on the machine falls on all of them alike."""
    for fn in fns:
        fn()
    sync(device)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            sync(device)
            ts.append(time.perf_counter() - start)
    return [sorted(ts) for ts in times]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--views", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--method", choices=list(METHODS), default=MULTI_VIEW,
                   help="whose augmentation settings (default: the first registered method that takes --num-views)")
    p.add_argument("--device", default="cpu", help="device of the batched path; the reference always runs on CPU")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    on_device = images.to(args.device)
    views = args.images * args.views
    rows = []
    for preset in ("crop", "patch"):
        fast = augment_for(args.views, args.method, preset)
        loader = DataLoader(ViewsOfImages(images, reference_for(args.views, args.method, preset)),
                            batch_size=LOADER_BATCH, num_workers=cores, persistent_workers=True)
        fast_times, ref_times = interleaved_times([lambda: fast(on_device), lambda: [batch for batch in loader]],
                                                  args.device, args.repeats)
        # The median is the typical run; the best is the least disturbed by other load on the machine.
        t_fast, t_ref = fast_times[len(fast_times) // 2], ref_times[len(ref_times) // 2]
        rows.append([preset, f"batched ({args.device})", f"{t_fast * 1e3:.1f}", f"{views / t_fast:,.0f}",
                     f"{views / fast_times[0]:,.0f}", f"{t_ref / t_fast:.1f}x", f"{ref_times[0] / fast_times[0]:.1f}x"])
        rows.append([preset, f"PIL reference ({cores} workers)", f"{t_ref * 1e3:.1f}", f"{views / t_ref:,.0f}",
                     f"{views / ref_times[0]:,.0f}", "1.0x", "1.0x"])
    print(f"{args.method}, {args.images} uint8 32x32 images x {args.views} views, {args.repeats} runs each; "
          f"{machine(args.device)}; {cores} CPU cores")
    print_table(["preset", "path", "ms (median)", "views/s (median)", "views/s (best)", "speed-up (median)",
                 "speed-up (best)"], rows)


if __name__ == "__main__":
    main()
