"""The evaluation engine behind ``evaluate_simclr.py`` and ``evaluate_empssl.py``.

Protocol: freeze the encoder (eval mode), fit a linear probe on features of the training images (full
32x32 image, no augmentation), then measure on the test images clean accuracy and accuracy under L-inf PGD
(20 steps, step eps/4, uniform random start, cross-entropy) run end to end from the image through
encoder + head. With ``--test-views N`` (EMP-SSL) the prediction averages the features of N augmented views;
the attack perturbs the image before the views are cut, with the views' parameters drawn once per batch.
"""
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from attacks import pgd_linf
from augment import MultiViewAugment
from models import ARCHS, Z_DIMS, build_encoder

from .checkpoint import clean_state_dict, load_checkpoint
from .cli import (Parser, default_data_dir, eps_label, fraction, nonneg_int, note_batch_size, positive_float,
                  positive_int, run_main)
from .data import DATASETS, load_dataset
from .errors import UsageError
from .run import make_dir, resolve_device, write_json
from .train import DISPLAY

SWEEP = [k / 255 for k in (0, 1, 2, 4, 8, 16)]


def build_parser(method: str) -> Parser:
    p = Parser(prog=f"evaluate_{method}.py",
               description=f"Linear probe on a frozen {DISPLAY[method]} encoder: clean and PGD accuracy.")
    p.add_argument("--checkpoint", required=True, help="a .pt written by a training script (or its run directory)")
    p.add_argument("--data", choices=DATASETS, default=None, help="dataset (default: the one the encoder trained on)")
    p.add_argument("--data-dir", default=None, help="dataset root (default: the training run's, $CFAMC_DATA_DIR, ./data)")
    p.add_argument("--download", action="store_true")
    p.add_argument("--subset-train", type=positive_int, default=None, help="fit the probe on the first N train images")
    p.add_argument("--subset-test", type=positive_int, default=None, help="test on the first N test images")
    p.add_argument("--features", choices=("pre", "backbone"), default="pre",
                   help="pre: the 4096-d pre_feature output; backbone: the pooled ResNet output")
    p.add_argument("--probe", choices=("standard", "adversarial"), default="standard",
                   help="standard: head fit on clean features; adversarial: on PGD examples through encoder + head")
    p.add_argument("--probe-epochs", type=positive_int, default=100)
    p.add_argument("--probe-lr", type=positive_float, default=1e-3, help="Adam learning rate (cosine to 0)")
    p.add_argument("--probe-batch-size", type=positive_int, default=512)
    p.add_argument("--probe-eps", type=fraction, default=8 / 255, help="adversarial probe: PGD radius (default: 8/255)")
    p.add_argument("--probe-pgd-steps", type=nonneg_int, default=5, help="adversarial probe: PGD steps")
    p.add_argument("--eps", type=fraction, nargs="+", default=[4 / 255, 8 / 255], help="test radii (default: 4/255 8/255)")
    p.add_argument("--eps-sweep", action="store_true", help="also test at 0, 1, 2, 4, 8, 16 /255")
    p.add_argument("--pgd-steps", type=nonneg_int, default=20)
    p.add_argument("--pgd-step-size", type=fraction, default=None, help="PGD step (default: eps/4)")
    p.add_argument("--no-random-start", dest="random_start", action="store_false", help="start PGD at the image")
    if method == "empssl":
        p.add_argument("--test-views", type=positive_int, default=1,
                       help="average the features of N augmented views (EMP-SSL's multi-view prediction)")
    p.add_argument("--autoattack", action="store_true", help="also run AutoAttack (standard, L-inf) at each eps")
    p.add_argument("--autoattack-samples", type=positive_int, default=1000)
    p.add_argument("--batch-size", type=positive_int, default=500, help="images per attack batch")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for eval.json and probe.pt (default: the checkpoint's)")
    return p


def _arch_from_state(state):
    layer1_blocks = len({k.split(".")[2] for k in state if k.startswith("backbone.layer1.")})
    return {2: "resnet18", 3: "resnet34"}.get(layer1_blocks, "resnet18")


def load_encoder(path, method: str):
    """(encoder in eval mode with frozen parameters, metadata) from a project or original-code checkpoint."""
    ckpt = load_checkpoint(path)
    state = clean_state_dict(ckpt["model"])
    other = "simclr" if method == "empssl" else "empssl"
    if "method" in ckpt:
        if ckpt["method"] != method:
            raise UsageError(f"{path} is a {ckpt['method']} checkpoint ({ckpt['config'].get('script', '?')}.py); "
                             f"evaluate it with evaluate_{ckpt['method']}.py")
        cfg = ckpt["config"]
        arch, width, hidden = cfg["arch"], cfg["width"], cfg["hidden_dim"]
    else:
        keys = ("backbone.conv1.weight", "pre_feature.0.weight", "projection.3.weight")
        if not all(k in state for k in keys):
            raise UsageError(f"{path} does not hold an encoder state dict (expected keys like {', '.join(keys)})")
        z_dim = state["projection.3.weight"].shape[0]
        if z_dim == Z_DIMS[other] and z_dim != Z_DIMS[method]:
            raise UsageError(f"{path} has a {z_dim}-d projection, a {other} encoder; evaluate it with evaluate_{other}.py")
        arch, width, hidden = _arch_from_state(state), state["backbone.conv1.weight"].shape[0], state["pre_feature.0.weight"].shape[0]
        cfg = {"method": method, "arch": arch, "width": width, "hidden_dim": hidden, "preset": "crop"}
        ckpt = {"method": method, "regime": "unknown", "config": cfg, "train_seconds": None, "epoch": None}
    if arch not in ARCHS:
        raise UsageError(f"{path} uses architecture {arch!r}, which this project does not build")
    encoder = build_encoder(method, arch, width, hidden)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as e:
        raise UsageError(f"{path} does not match a {method} {arch} encoder: {str(e).splitlines()[0]}") from None
    encoder.eval().requires_grad_(False)
    return encoder, {k: ckpt.get(k) for k in ("method", "regime", "config", "train_seconds", "epoch")}


class ViewAveragingClassifier(nn.Module):
    """Image -> logits. With views, the features of the augmented views are averaged before the head; the
    views' random parameters are drawn by ``fix_views`` and held until the next call, so an attack and the
    final prediction see the same views."""

    def __init__(self, encoder, head, feature_kind, augment=None):
        super().__init__()
        self.encoder, self.head, self.feature_kind, self.augment = encoder, head, feature_kind, augment
        self.params = None

    def fix_views(self, batch_size, device):
        if self.augment is not None:
            self.params = self.augment.sample_params(batch_size, device)

    def features(self, x):
        if self.augment is None:
            return self.encoder.features(x, self.feature_kind)
        views = self.augment.apply(x, self.params)
        return self.encoder.features(views, self.feature_kind).view(self.augment.num_views, x.shape[0], -1).mean(0)

    def forward(self, x):
        return self.head(self.features(x))


@torch.no_grad()
def extract_features(model: ViewAveragingClassifier, images, batch_size, device):
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc="features", leave=False, disable=None):
        x = images[i: i + batch_size].to(device).float().div_(255)
        model.fix_views(len(x), device)
        out.append(model.features(x))
    return torch.cat(out)


def _batches(n, batch_size, generator, device):
    order = torch.randperm(n, generator=generator).to(device)
    return [order[i: i + batch_size] for i in range(0, n, batch_size)]


def _adam_cosine(head, lr, total_steps):
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total_steps)))
    return opt, sched


def fit_head(head, feats, labels, epochs, lr, batch_size, seed):
    """Adam with a cosine schedule on fixed features; returns the head in eval mode."""
    opt, sched = _adam_cosine(head, lr, epochs * math.ceil(len(feats) / batch_size))
    g = torch.Generator().manual_seed(seed)
    head.train()
    for _ in tqdm(range(epochs), desc="probe", leave=False, disable=None):
        for idx in _batches(len(feats), batch_size, g, feats.device):
            loss = F.cross_entropy(head(feats[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


def fit_head_adversarially(model: ViewAveragingClassifier, images, labels, args, device):
    """Each minibatch: PGD through encoder + head against the current head, then a head step on the result."""
    head = model.head
    opt, sched = _adam_cosine(head, args.probe_lr, args.probe_epochs * math.ceil(len(images) / args.probe_batch_size))
    g = torch.Generator().manual_seed(args.seed)
    for _ in tqdm(range(args.probe_epochs), desc="adversarial probe", leave=False, disable=None):
        for idx in _batches(len(images), args.probe_batch_size, g, torch.device("cpu")):
            x, y = images[idx].to(device).float().div_(255), labels[idx].to(device)
            model.fix_views(len(x), device)
            x_adv = pgd_linf(lambda xa: F.cross_entropy(model(xa), y, reduction="sum"), x, args.probe_eps,
                             args.probe_eps / 4, args.probe_pgd_steps, random_start=True)
            loss = F.cross_entropy(model(x_adv), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return head.eval()


def robust_accuracy(model: ViewAveragingClassifier, images, labels, eps_list, steps, batch_size, device,
                    step_size=None, random_start=True):
    """Percent correct on clean images and under PGD at each eps; every image counted once, in order.

    Returns (clean, {eps: accuracy}, n).
    """
    correct = {eps: 0 for eps in eps_list}
    clean = n = 0
    for i in tqdm(range(0, len(images), batch_size), desc="attack", leave=False, disable=None):
        x, y = images[i: i + batch_size].to(device).float().div_(255), labels[i: i + batch_size].to(device)
        model.fix_views(len(x), device)
        with torch.no_grad():
            clean += int((model(x).argmax(1) == y).sum())
        for eps in eps_list:
            alpha = step_size if step_size is not None else eps / 4
            x_adv = pgd_linf(lambda xa: F.cross_entropy(model(xa), y, reduction="sum"), x, eps, alpha, steps,
                             random_start=random_start)
            with torch.no_grad():
                correct[eps] += int((model(x_adv).argmax(1) == y).sum())
        n += len(x)
    return 100.0 * clean / n, {eps: 100.0 * c / n for eps, c in correct.items()}, n


def autoattack_accuracy(model, images, labels, eps, num_classes, batch_size, device, seed):
    import torchattacks

    attack = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=num_classes, seed=seed)
    correct = 0
    for i in range(0, len(images), batch_size):
        x, y = images[i: i + batch_size].to(device).float().div_(255), labels[i: i + batch_size].to(device)
        with torch.no_grad():
            correct += int((model(attack(x, y)).argmax(1) == y).sum())
    return 100.0 * correct / len(images)


def evaluate(method: str, argv=None):
    args = build_parser(method).parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    note_batch_size(args.batch_size)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    encoder, meta = load_encoder(args.checkpoint, method)
    encoder.to(device)
    cfg = meta["config"]
    test_views = getattr(args, "test_views", 1)
    if args.autoattack and test_views > 1:
        raise UsageError("--autoattack attacks the single-view classifier; run it without --test-views")
    data = args.data or cfg.get("data", "cifar10")
    data_dir = args.data_dir or cfg.get("data_dir") or default_data_dir() or "data"
    train_x, train_y = load_dataset(data, data_dir, train=True, download=args.download)
    test_x, test_y = load_dataset(data, data_dir, train=False, download=args.download)
    train_x, train_y = train_x[: args.subset_train], train_y[: args.subset_train]
    test_x, test_y = test_x[: args.subset_test], test_y[: args.subset_test]
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    ckpt_path = Path(args.checkpoint)
    out_dir = make_dir(args.out or (ckpt_path if ckpt_path.is_dir() else ckpt_path.parent))

    augment = None
    if test_views > 1:  # the training run's views: its preset and any crop overrides
        scale = (cfg["scale_min"], cfg["scale_max"]) if cfg.get("scale_min") is not None else None
        ratio = (cfg["ratio_min"], cfg["ratio_max"]) if cfg.get("ratio_min") is not None else None
        augment = MultiViewAugment(test_views, "empssl", cfg.get("preset", "crop"), scale=scale, ratio=ratio)
    head = nn.Linear(encoder.feature_dim(args.features), num_classes).to(device)
    model = ViewAveragingClassifier(encoder, head, args.features, augment).eval()
    if args.probe == "standard":
        feats = extract_features(model, train_x, args.batch_size, device)
        fit_head(head, feats, train_y.to(device), args.probe_epochs, args.probe_lr, args.probe_batch_size, args.seed)
    else:
        fit_head_adversarially(model, train_x, train_y, args, device)
    head.requires_grad_(False)

    eps_list = sorted(set(args.eps) | (set(SWEEP) if args.eps_sweep else set()))
    clean, robust, n = robust_accuracy(model, test_x, test_y, eps_list, args.pgd_steps, args.batch_size, device,
                                       args.pgd_step_size, args.random_start)
    result = {
        "method": method,
        "regime": meta["regime"],
        "checkpoint": str(ckpt_path),
        "clean": round(clean, 2),
        "pgd": {eps_label(e): round(a, 2) for e, a in robust.items()},
        "n_test": n,
        "n_train": len(train_x),
        "train_seconds": meta["train_seconds"],
        "train_config": cfg,
    }
    if args.autoattack:
        k = min(args.autoattack_samples, len(test_x))
        result["autoattack"] = {
            eps_label(e): round(autoattack_accuracy(model, test_x[:k], test_y[:k], e, num_classes, args.batch_size,
                                                    device, args.seed), 2) for e in args.eps}
        result["autoattack_samples"] = k
    result["seconds"] = round(time.monotonic() - started, 1)
    result["settings"] = {k: v for k, v in vars(args).items()}
    write_json(out_dir / "eval.json", result)
    torch.save({"head": head.state_dict(), "feature_kind": args.features, "num_classes": num_classes,
                "test_views": test_views}, out_dir / "probe.pt")
    cells = [f"clean {result['clean']:.2f}"] + [f"PGD({k}) {v:.2f}" for k, v in result["pgd"].items()]
    cells += [f"AA({k}) {v:.2f}" for k, v in result.get("autoattack", {}).items()]
    print(f"| {ckpt_path} | " + " | ".join(cells) + f" | n={n} |")
    print(f"wrote {out_dir / 'eval.json'} and {out_dir / 'probe.pt'}")
    return result


def main(method: str):
    run_main(evaluate, method)
