"""Training throughput of each script's default configuration, and the projected time of its full run.

    python -m benchmarks.bench_train [--scripts main_empssl_free_adv ...] [--compile both] [--device cuda] [--json F]

For each script: images/s over --steps timed optimizer steps (after --warmup), epoch time on 50,000 images,
peak device memory, model FLOP utilisation (forward + backward FLOPs counted by torch's FlopCounterMode,
against --peak-tflops), and the projected time of the script's default run next to the paper's Time column.
Data are random uint8 images resident on the device, as in training. On the CPU use a small model
(--width 8 --hidden-dim 64 --batch-size 8 --num-views 2) to check that it runs.
"""
import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import print_table, scratch, sync
from experiments.paper import PAPER
from utils.core.files import machine
from utils.engine.config import entry_scripts, parse_config
from utils.engine.train import Trainer
from utils.methods import METHODS
from utils.studies.ablation import regime_class

TRAIN_IMAGES = 50_000
# Dense bf16 peak of the chips this has run on, TFLOP/s, for MFU (the H200 is the H100's processor).
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}


def peak_tflops(device) -> float:
    """The device's dense bf16 peak from ``PEAK_BF16_TFLOPS``, or None where it is not listed."""
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for chip, peak in PEAK_BF16_TFLOPS.items() if chip in name), None)


def script_rows() -> dict:
    """script -> (method, regime, its defaults, the paper's minutes for its crop-based row or None)."""
    rows = {}
    for (method, regime), (script, defaults) in entry_scripts().items():
        minutes = [row.minutes for row in PAPER
                   if (row.method, row.preset, row.regime) == (method, defaults.get("preset", "crop"), regime)]
        rows[script] = (method, regime, defaults, minutes[0] if minutes else None)
    return rows


def model_flops(trainer, views):
    """Forward + backward FLOPs of the encoder on one step's views."""
    with FlopCounterMode(display=False) as counter:
        with trainer.autocast():
            out = trainer.model(views)
        out.float().sum().backward()
    trainer.model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure(script, args, compile_model) -> dict:
    """One script's throughput: images/s, FLOP/s, MFU, epoch and full-run time, peak memory, host sync."""
    method, regime, defaults, paper_min = script_rows()[script]
    batch = args.batch_size or defaults["batch_size"]
    cfg, given, _ = parse_config(method, regime, defaults, bench_argv(method, batch, args, compile_model))
    n = max(batch * (args.steps + args.warmup), batch)
    trainer = Trainer(cfg, given, images=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8))
    device = trainer.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    order = torch.randperm(n, device=device)

    def step(i):
        return trainer.train_step(trainer.images[order[(i * batch) % (n - batch + 1):][:batch]])

    for i in range(args.warmup):
        step(i)
    host_sync = host_sync_of(step, args.warmup, device)
    seconds = seconds_per_step(step, args.steps, device)
    flops = model_flops(trainer, trainer.augment(trainer.images[:batch])) * regime_class(cfg).passes_per_batch(cfg)
    epoch_s = seconds * (TRAIN_IMAGES // batch)
    return {"script": script, "compile": compile_model, "batch": batch, "step_seconds": seconds,
            "images_per_s": batch / seconds, "flops_per_step": flops, "flop_per_s": flops / seconds,
            "mfu": flops / seconds / (args.peak_tflops * 1e12) if args.peak_tflops else None,
            "peak_tflops": args.peak_tflops, "epoch_s": epoch_s, "full_run_min": epoch_s * cfg["epochs"] / 60,
            "paper_min": paper_min, "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30
            if device.type == "cuda" else None, "host_sync": host_sync, "machine": machine(device)}


def row(m) -> list:
    return [m["script"] + (" +compile" if m["compile"] else ""), f"{m['images_per_s']:.0f}", f"{m['epoch_s']:.1f}",
            "-" if m["peak_gib"] is None else f"{m['peak_gib']:.1f}",
            "-" if m["mfu"] is None else f"{100 * m['mfu']:.1f}",
            f"{m['full_run_min']:.1f}", str(m["paper_min"] or "-"), m["host_sync"]]


def bench_argv(method, batch, args, compile_model) -> list:
    argv = ["--device", args.device, "--width", str(args.width), "--hidden-dim", str(args.hidden_dim),
            "--batch-size", str(batch), "--out-dir", args.out_dir, "--checkpoint-minutes", "0"]
    if METHODS[method].views is None and args.num_views:
        argv += ["--num-views", str(args.num_views)]
    return argv + (["--compile"] if compile_model else [])


def host_sync_of(step, i, device) -> str:
    """'none', or the first line of the error that step ``i`` raises where it waits for the GPU (``.item()``,
    a data-dependent shape, ...); '-' off CUDA."""
    sync(device)
    if device.type != "cuda":
        return "-"
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(i)
        return "none"
    except RuntimeError as e:
        return str(e).splitlines()[0][:60]
    finally:
        torch.cuda.set_sync_debug_mode("default")


def seconds_per_step(step, steps, device) -> float:
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(device)
    return (time.perf_counter() - start) / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scripts", nargs="+", default=list(script_rows()), choices=list(script_rows()))
    p.add_argument("--compile", choices=("off", "on", "both"), default="off")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=None, help="override every script's batch")
    p.add_argument("--num-views", type=int, default=None, help="override the views of methods that take --num-views")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="device peak for MFU, e.g. 989 for H100 SXM dense bf16 (default: none on CPU)")
    p.add_argument("--out-dir", default=scratch("bench_train"))
    p.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = p.parse_args(argv)
    if args.peak_tflops is None:
        args.peak_tflops = peak_tflops(args.device)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    results = [measure(s, args, c) for s in args.scripts for c in modes]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    print(f"width {args.width}, hidden {args.hidden_dim}, {machine(args.device)}")
    print_table(["script", "img/s", "epoch s", "peak GiB", "MFU %", "full run min", "paper min", "host sync"],
                [row(m) for m in results])


if __name__ == "__main__":
    main()
