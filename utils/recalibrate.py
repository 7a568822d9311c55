"""Re-estimate a trained encoder's BatchNorm running statistics on clean views, into a new checkpoint.

    python -m utils.recalibrate CHECKPOINT --out NEW.pt [--images 2000] [--data-dir DATA]

A diagnostic: adversarial training accumulates the running statistics on perturbed batches, and an encoder
evaluated on clean images normalises them with those statistics. Evaluating the new checkpoint beside the old
one (``evaluate_<method>.py --checkpoint NEW.pt``) tells whether the statistics or the weights carry a
difference. The views are cut as in training (the run's method, preset and views), unperturbed, in the run's
batch size; every running average is the plain mean over all batches. The new file holds the same run with
only the BatchNorm buffers changed; it never replaces an existing file.
"""
import sys
from pathlib import Path

import torch
from torch import nn

from utils.core.checkpoint import clean_state_dict, load_checkpoint, save_checkpoint
from utils.core.cli import Parser, positive_int, run_main
from utils.core.data import load_dataset, stratified_subset
from utils.core.errors import UsageError
from utils.engine.blocks import run_augment, run_encoder
from utils.engine.config import resolve_saved


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches) -> None:
    """Reset every BatchNorm layer's running statistics and re-estimate them as the plain average over
    ``batches`` (each an input of ``model``), forwarded in train mode; the model's modes are restored."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    training = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    try:
        for batch in batches:
            model(batch)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(training)


def clean_view_batches(cfg, images, seed):
    """The run's views of ``images`` (uint8), unperturbed, one training forward's input at a time: a training
    batch's views, its clean views apart from the others where the run had ``--clean-apart``, and each view on
    its own where it forwarded views one by one."""
    augment = run_augment(cfg)
    per_view, batch = cfg["per_view_forward"], cfg["batch_size"]
    apart = cfg["clean_views"] * batch if cfg.get("clean_apart") else 0
    torch.manual_seed(seed)
    for start in range(0, len(images) - batch + 1, batch):
        views = augment(images[start: start + batch])
        for group in (views[:apart], views[apart:]) if apart else (views,):
            yield from group.split(batch) if per_view else (group,)


def recalibrate(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists; recalibration writes a new checkpoint, choose another --out")
    ckpt = load_checkpoint(args.checkpoint)
    if "config" not in ckpt:
        raise UsageError(f"{args.checkpoint} is not a training checkpoint of this project; it has no run config")
    cfg = resolve_saved(ckpt["config"])
    model = run_encoder(cfg)
    model.load_state_dict(clean_state_dict(ckpt["model"]))
    images, labels = load_dataset(cfg["data"], args.data_dir or cfg["data_dir"], train=True,
                                  image_size=cfg["image_size"], unlabeled=cfg["unlabeled"])
    images = images[stratified_subset(labels, min(args.images, len(images)), 0)]
    if len(images) < cfg["batch_size"]:
        raise UsageError(f"--images {args.images} is fewer than one training batch ({cfg['batch_size']})")
    recalibrate_bn(model, clean_view_batches(cfg, images, cfg["seed"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({**ckpt, "model": model.state_dict(), "recalibrated": {"images": len(images)}}, out)
    print(f"wrote {out}: {cfg['method']} encoder with BatchNorm statistics of {len(images)} clean images' views")


def build_parser() -> Parser:
    p = Parser(prog="python -m utils.recalibrate", description="Re-estimate BatchNorm statistics on clean views.")
    p.add_argument("checkpoint", help="a training checkpoint (or its run directory)")
    p.add_argument("--out", required=True, help="the new checkpoint (must not exist)")
    p.add_argument("--images", type=positive_int, default=2000, help="class-stratified training images to use")
    p.add_argument("--data-dir", default=None, help="dataset root (default: the run's)")
    return p


if __name__ == "__main__":
    sys.exit(1 if run_main(recalibrate) else 0)
