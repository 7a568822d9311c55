"""The training engine behind the six ``main_*.py`` scripts: one loop for {SimCLR, EMP-SSL} x
{standard, PGD adversarial, free adversarial}.

The dataset lives on the training device as uint8; each step indexes a per-epoch permutation, cuts the
views on the device (``augment.MultiViewAugment``), and takes one optimizer step (or ``replays`` of them in
the free regime). Loss values stay on the device and are read back every ``--log-every`` steps.
"""
import argparse
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from attacks import FreeAdversary, frozen_bn_stats, pgd_linf
from augment import MultiViewAugment
from losses import empssl_loss, nt_xent
from models import ARCHS, build_encoder

from . import distributed as dist
from .checkpoint import clean_state_dict, load_checkpoint, save_checkpoint
from .cli import Parser, default_data_dir, fraction, nonneg_float, nonneg_int, note_batch_size, positive_float, positive_int, run_main
from .data import DATASETS, load_dataset
from .errors import UsageError
from .optim import LARS, cosine_lr
from .run import append_jsonl, default_run_dir, make_dir, resolve_device, write_json

METHODS = ("simclr", "empssl")
REGIMES = ("standard", "pgd", "free")
SCRIPTS = {
    ("simclr", "standard"): "main_simclr",
    ("simclr", "pgd"): "main_simclr_adv",
    ("simclr", "free"): "main_simclr_free_adv",
    ("empssl", "standard"): "main_empssl",
    ("empssl", "pgd"): "main_empssl_adv",
    ("empssl", "free"): "main_empssl_free_adv",
}
DISPLAY = {"simclr": "SimCLR", "empssl": "EMP-SSL"}
REGIME_TEXT = {"standard": "standard training", "pgd": "PGD adversarial training",
               "free": "free adversarial training"}
# Flags a resumed run must share with the checkpoint: they fix the model, the data or the schedule.
ESSENTIAL = ("method", "regime", "arch", "width", "hidden_dim", "num_views", "batch_size", "epochs", "data", "subset",
             "replays")


class NonFiniteLoss(UsageError):
    pass


def build_parser(method: str, regime: str, defaults: dict) -> Parser:
    script = SCRIPTS[method, regime]
    p = Parser(prog=f"{script}.py", description=f"Train a ResNet encoder with {DISPLAY[method]} ({REGIME_TEXT[regime]}).")
    g = p.add_argument_group("data")
    g.add_argument("--data", choices=DATASETS, default="cifar10", help="dataset layout")
    g.add_argument("--data-dir", default=default_data_dir() or "data",
                   help="dataset root (default: $CFAMC_DATA_DIR or ./data)")
    g.add_argument("--download", action="store_true", help="download CIFAR-10/100 into --data-dir if missing")
    g.add_argument("--subset", type=positive_int, default=None, help="train on the first N images only")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, default=defaults["epochs"])
    g.add_argument("--batch-size", type=positive_int, default=defaults["batch_size"], help="images per step (global)")
    g.add_argument("--lr", type=nonneg_float, default=0.3, help="base learning rate (cosine to 0)")
    g.add_argument("--momentum", type=nonneg_float, default=0.9)
    g.add_argument("--weight-decay", type=nonneg_float, default=1e-4)
    g.add_argument("--lars-eta", type=positive_float, default=0.005, help="LARS trust coefficient")
    g = p.add_argument_group("views")
    if method == "empssl":
        g.add_argument("--num-views", type=positive_int, default=defaults.get("num_views", 16), help="views per image")
    g.add_argument("--preset", choices=("crop", "patch"), default=defaults.get("preset", "crop"),
                   help="crop: scale (0.08, 1), ratio (3/4, 4/3); patch: fixed 16x16 patches")
    g.add_argument("--scale-min", type=positive_float, default=None, help="override the preset's crop scale")
    g.add_argument("--scale-max", type=positive_float, default=None)
    g.add_argument("--ratio-min", type=positive_float, default=None, help="override the preset's aspect ratio")
    g.add_argument("--ratio-max", type=positive_float, default=None)
    g = p.add_argument_group("model and objective")
    g.add_argument("--arch", choices=sorted(ARCHS), default="resnet18")
    g.add_argument("--width", type=positive_int, default=64, help="base channels (64 = ResNet-18)")
    g.add_argument("--hidden-dim", type=positive_int, default=4096, help="projector hidden size")
    if method == "simclr":
        g.add_argument("--temperature", type=positive_float, default=0.07)
    else:
        g.add_argument("--tcr-eps", type=positive_float, default=0.2, help="TCR distortion eps")
        g.add_argument("--inv-coef", type=nonneg_float, default=200.0, help="weight of the invariance term")
        g.add_argument("--tcr-coef", type=nonneg_float, default=1.0, help="weight of the TCR term")
    if regime != "standard":
        g = p.add_argument_group("adversary")
        g.add_argument("--eps", type=fraction, default=8 / 255, help="L-inf radius, as 8/255 or 0.0314 (default: 8/255)")
        g.add_argument("--alpha", type=fraction, default=0.01, help="ascent step size")
        if regime == "pgd":
            g.add_argument("--pgd-steps", type=nonneg_int, default=5)
            g.add_argument("--random-start", action="store_true", help="start PGD at a uniform point, not at 0")
        else:
            g.add_argument("--replays", type=positive_int, default=3, help="replays m of each minibatch")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU; losses are always float32")
    g.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    g.add_argument("--sync-bn", action=BoolFlag, default=True, help="synchronise BatchNorm across ranks (DDP, CUDA)")
    g.add_argument("--out-dir", default=None, help=f"run directory (default: runs/{script}/<timestamp>)")
    g.add_argument("--save-every", type=nonneg_int, default=defaults.get("save_every", 0),
                   help="also keep epoch_NNNN.pt every N epochs (0: only last.pt)")
    g.add_argument("--checkpoint-minutes", type=nonneg_float, default=10.0,
                   help="rewrite last.pt mid-epoch this often (0: only at epoch ends)")
    g.add_argument("--resume", default=None,
                   help="run directory or checkpoint to continue; 'auto' = last.pt of --out-dir or the newest run")
    g.add_argument("--log-every", type=positive_int, default=None,
                   help="read losses back to the host every N steps (default: 1 on CPU, 50 on CUDA)")
    return p


class BoolFlag(argparse.Action):
    """``--flag`` / ``--no-flag``."""

    def __init__(self, option_strings, dest, **kw):
        opts = list(option_strings) + [s.replace("--", "--no-", 1) for s in option_strings]
        super().__init__(opts, dest, nargs=0, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no-"))


def parse_config(method, regime, defaults, argv):
    parser = build_parser(method, regime, defaults)
    args = parser.parse_args(argv)
    explicit = build_parser(method, regime, defaults)
    for action in explicit._actions:
        action.default = argparse.SUPPRESS
    given = set(vars(explicit.parse_args(argv)))
    cfg = vars(args)
    cfg.update(method=method, regime=regime, script=SCRIPTS[method, regime])
    cfg.setdefault("num_views", 2)
    cfg.setdefault("replays", 1)
    for lo, hi in (("scale_min", "scale_max"), ("ratio_min", "ratio_max")):
        if (cfg[lo] is None) != (cfg[hi] is None):
            parser.error(f"--{lo.replace('_', '-')} and --{hi.replace('_', '-')} go together")
        if cfg[lo] is not None and cfg[lo] > cfg[hi]:
            parser.error(f"--{lo.replace('_', '-')} must not exceed --{hi.replace('_', '-')}")
    if cfg["scale_max"] is not None and cfg["scale_max"] > 1:
        parser.error("--scale-max must be at most 1 (a fraction of the image area)")
    if cfg["num_views"] < 2:
        parser.error("--num-views must be at least 2 (the objective compares views)")
    return cfg, given, parser


class Objective:
    """The self-supervised loss on view-major embeddings (V*b, d) and the part of the views an adversary
    perturbs: all of them for EMP-SSL, the second view for SimCLR (view 1 stays clean)."""

    def __init__(self, cfg):
        self.method = cfg["method"]
        self.cfg = cfg
        self.num_views = cfg["num_views"]
        self.term_names = ["loss"] + (["invariance", "tcr"] if self.method == "empssl" else [])

    def perturbed_from(self, local_batch: int) -> int:
        return 0 if self.method == "empssl" else local_batch

    def __call__(self, z: torch.Tensor):
        z = dist.gather_views(z.view(self.num_views, -1, z.shape[-1]))
        if self.method == "simclr":
            return nt_xent(z[0], z[1], self.cfg["temperature"]), []
        loss, terms = empssl_loss(z, self.cfg["inv_coef"], self.cfg["tcr_coef"], self.cfg["tcr_eps"])
        return loss, [terms["invariance"], terms["tcr"]]


class Trainer:
    def __init__(self, cfg, given, images=None):
        """``images``: a uint8 (N, 3, H, W) tensor to train on instead of ``--data`` (benchmarks, tests)."""
        self.cfg = cfg
        self.rank, self.world = dist.rank(), dist.world_size()
        self.is_main = self.rank == 0
        resume_path = self._resume_path(cfg["resume"], cfg["out_dir"], cfg["script"])
        state = None
        if resume_path is not None:
            state = load_checkpoint(resume_path)
            self._check_resume(state, resume_path, given)
        self.device = dist.device_for(resolve_device(cfg["device"]))
        cuda = self.device.type == "cuda"
        self.amp = cfg["precision"] == "bf16" or (cfg["precision"] == "auto" and cuda)
        if self.amp and not cuda:
            raise UsageError("--precision bf16 needs CUDA; on the CPU training runs in float32")
        self.log_every = cfg["log_every"] or (50 if cuda else 1)
        if cfg["batch_size"] % self.world:
            raise UsageError(f"--batch-size {cfg['batch_size']} must be divisible by the {self.world} processes")
        self.local_batch = cfg["batch_size"] // self.world
        note_batch_size(cfg["batch_size"])

        torch.manual_seed(cfg["seed"])
        if images is None:
            if self.is_main:
                images, _ = load_dataset(cfg["data"], cfg["data_dir"], train=True, download=cfg["download"])
            dist.barrier()  # the other ranks read what rank 0 may have just downloaded
            if not self.is_main:
                images, _ = load_dataset(cfg["data"], cfg["data_dir"], train=True)
        if cfg["subset"]:
            images = images[: cfg["subset"]]
        if cfg["batch_size"] > len(images):
            raise UsageError(f"--batch-size {cfg['batch_size']} is larger than the {len(images)} training images")
        self.images = images.to(self.device)
        out_dir = cfg["out_dir"] or (resume_path.parent if resume_path else default_run_dir(cfg["script"]))
        cfg["out_dir"] = str(out_dir)
        self.out_dir = make_dir(out_dir) if self.is_main else Path(out_dir)
        self.steps_per_epoch = len(images) // cfg["batch_size"]
        self.total_steps = cfg["epochs"] * self.steps_per_epoch * cfg["replays"]

        self.model = build_encoder(cfg["method"], cfg["arch"], cfg["width"], cfg["hidden_dim"]).to(self.device)
        if cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = LARS(self.model.parameters(), cfg["lr"], cfg["momentum"], cfg["weight_decay"], cfg["lars_eta"])
        wrapped = dist.wrap_model(self.model, self.device, cfg["sync_bn"])
        # The attack runs the bare model: DDP's reducer expects parameter gradients after every forward.
        self.attack_net = torch.compile(self.model) if cfg["compile"] else self.model
        self.net = self.attack_net if wrapped is self.model else (torch.compile(wrapped) if cfg["compile"] else wrapped)
        scale = (cfg["scale_min"], cfg["scale_max"]) if cfg["scale_min"] is not None else None
        ratio = (cfg["ratio_min"], cfg["ratio_max"]) if cfg["ratio_min"] is not None else None
        self.augment = MultiViewAugment(cfg["num_views"], cfg["method"], cfg["preset"], scale=scale, ratio=ratio)
        self.objective = Objective(cfg)
        self.k = self.objective.perturbed_from(self.local_batch)
        self.free = None
        if cfg["regime"] == "free":
            shape = (cfg["num_views"] * self.local_batch - self.k, 3, 32, 32)
            self.free = FreeAdversary(shape, cfg["eps"], cfg["alpha"], self.device)

        self.epoch, self.batch_in_epoch, self.step, self.train_seconds = 0, 0, 0, 0.0
        # Augmentation draws differ per rank; initial weights and data order agree (seeded above / per epoch).
        torch.manual_seed(cfg["seed"] + 1_000_003 * (self.rank + 1))
        if state is not None:
            self._restore(state)
        self.stop_signal = None

    # ----- resume -------------------------------------------------------------------------------
    @staticmethod
    def _resume_path(resume, out_dir, script):
        if resume is None:
            return None
        if resume == "auto":
            candidates = [Path(out_dir) / "last.pt"] if out_dir else sorted(Path("runs", script).glob("*/last.pt"))
            existing = [c for c in candidates if c.is_file()]
            return existing[-1] if existing else None
        path = Path(resume)
        return path / "last.pt" if path.is_dir() else path

    def _check_resume(self, state, path, given):
        if "method" not in state or "config" not in state:
            raise UsageError(f"{path} is not a training checkpoint of this project; cannot resume from it")
        saved = state["config"]
        for key in ESSENTIAL:
            if key in ("method", "regime"):
                if saved[key] != self.cfg[key]:
                    raise UsageError(
                        f"{path} was trained by {saved['script']}.py ({saved['method']}, {saved['regime']}); "
                        f"resume it with that script"
                    )
            elif key in given and saved.get(key) != self.cfg.get(key):
                flag = "--" + key.replace("_", "-")
                raise UsageError(f"cannot resume {path} with {flag} {self.cfg[key]}: it was trained with {saved.get(key)}")
        for key, value in saved.items():
            if key not in given and key not in ("out_dir", "resume"):
                self.cfg[key] = value

    def _restore(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.train_seconds = state["train_seconds"]
        if self.free is not None:
            self.free.load_state_dict(state["free"][min(self.rank, len(state["free"]) - 1)])
        rng = state["rng"][min(self.rank, len(state["rng"]) - 1)]
        torch.set_rng_state(rng["cpu"])
        if self.device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def checkpoint(self, name="last.pt"):
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        rngs = dist.gather_objects(rng)
        # Each rank perturbs its own share of the batch: keep every rank's perturbation, like its RNG state.
        frees = dist.gather_objects({k: v.cpu() if torch.is_tensor(v) else v for k, v in self.free.state_dict().items()}
                                    if self.free is not None else None)
        if not self.is_main:
            return
        state = {
            "method": self.cfg["method"],
            "regime": self.cfg["regime"],
            "model": clean_state_dict(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "train_seconds": self.train_seconds,
            "rng": rngs,
            "free": frees if self.free is not None else None,
            "config": {k: v for k, v in self.cfg.items()},
        }
        save_checkpoint(state, self.out_dir / name)

    # ----- one optimizer step per regime ---------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def _loss(self, views, net=None):
        with self._autocast():
            z = (self.net if net is None else net)(views)
        return self.objective(z)

    def _update(self, loss):
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_lr(self.step, self.total_steps, self.cfg["lr"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1

    def craft(self, clean, target):
        """PGD on ``target`` against the training loss; the model, its gradients and BN buffers stay as they are."""
        with frozen_bn_stats(self.model):
            return pgd_linf(lambda x: self._loss(torch.cat([clean, x]), self.attack_net)[0], target, self.cfg["eps"],
                            self.cfg["alpha"], self.cfg["pgd_steps"], self.cfg["random_start"])

    def train_step(self, batch):
        views = self.augment(batch)
        if self.device.type == "cuda":
            views = views.contiguous(memory_format=torch.channels_last)
        regime = self.cfg["regime"]
        if regime == "standard":
            loss, terms = self._loss(views)
            self._update(loss)
            return loss, terms
        clean, target = views[: self.k], views[self.k:]
        if regime == "pgd":
            loss, terms = self._loss(torch.cat([clean, self.craft(clean, target)]))
            self._update(loss)
            return loss, terms
        for _ in range(self.cfg["replays"]):
            loss, terms = self._loss(torch.cat([clean, self.free.perturb(target)]))
            self._update(loss)
            self.free.step(target)
        return loss, terms

    # ----- the loop ------------------------------------------------------------------------------
    def _epoch_order(self, epoch):
        g = torch.Generator().manual_seed(self.cfg["seed"] * 1_000_003 + epoch)
        return torch.randperm(len(self.images), generator=g).to(self.device)

    def _on_signal(self, signum, frame):
        if self.stop_signal is not None:
            os._exit(128 + signum)
        self.stop_signal = signum
        if self.is_main:
            print(f"\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint "
                  f"(send it again to exit at once)", file=sys.stderr)

    def run(self):
        cfg = self.cfg
        if self.is_main:
            write_json(self.out_dir / "config.json", cfg)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self):
        cfg = self.cfg
        names = self.objective.term_names
        last_save = time.monotonic()
        while self.epoch < cfg["epochs"]:
            order = self._epoch_order(self.epoch)
            sums = torch.zeros(len(names), device=self.device)
            bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
            bad_terms = torch.zeros(len(names), device=self.device)
            first_batch, epoch_start, banked, stop = self.batch_in_epoch, time.monotonic(), 0.0, False
            bar = tqdm(total=self.steps_per_epoch, initial=first_batch, desc=f"epoch {self.epoch + 1}/{cfg['epochs']}",
                       disable=None if self.is_main else True, dynamic_ncols=True, leave=False)
            for b in range(first_batch, self.steps_per_epoch):
                start = b * cfg["batch_size"] + self.rank * self.local_batch
                loss, terms = self.train_step(self.images[order[start: start + self.local_batch]])
                values = torch.stack([loss.detach().float(), *terms])
                sums += values
                newly_bad = ~torch.isfinite(values).all() & (bad_step < 0)
                bad_step = torch.where(newly_bad, self.step, bad_step)
                bad_terms = torch.where(newly_bad, values, bad_terms)
                self.batch_in_epoch = b + 1
                bar.update(1)
                done = b + 1 - first_batch
                # Host syncs happen only here, every log_every steps; under DDP every rank reaches the same
                # points, so the decisions to save or stop are taken together.
                if done % self.log_every and b + 1 < self.steps_per_epoch:
                    continue
                self._check_finite(bad_step, bad_terms, names)
                elapsed = banked + time.monotonic() - epoch_start
                bar.set_postfix(loss=f"{sums[0].item() / done:.4g}", img_s=f"{done * cfg['batch_size'] / elapsed:.0f}")
                save_due = bool(cfg["checkpoint_minutes"]) and time.monotonic() - last_save > 60 * cfg["checkpoint_minutes"]
                stop, save_due = dist.any_true(self.stop_signal is not None, save_due and b + 1 < self.steps_per_epoch)
                if stop and b + 1 < self.steps_per_epoch:
                    self._stop(epoch_start)
                if save_due:
                    self._save_progress(epoch_start)
                    banked += time.monotonic() - epoch_start
                    epoch_start = last_save = time.monotonic()
            bar.close()
            seconds = banked + time.monotonic() - epoch_start
            self.train_seconds += time.monotonic() - epoch_start
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            done = self.steps_per_epoch - first_batch
            means = (sums / max(done, 1)).tolist()
            record = {"epoch": self.epoch, "step": self.step, **dict(zip(names, means)),
                      "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
                      "images_per_s": round(done * cfg["batch_size"] / max(seconds, 1e-9), 1),
                      "train_seconds": round(self.train_seconds, 3)}
            self.checkpoint()
            if cfg["save_every"] and self.epoch % cfg["save_every"] == 0:
                self.checkpoint(f"epoch_{self.epoch:04d}.pt")
            last_save = time.monotonic()
            if self.is_main and done:
                append_jsonl(self.out_dir / "metrics.jsonl", record)
                terms = " ".join(f"{k} {v:.4g}" for k, v in zip(names, means))
                print(f"epoch {self.epoch}/{cfg['epochs']}  {terms}  lr {record['lr']:.3g}  "
                      f"{seconds:.1f}s  {record['images_per_s']:.0f} img/s", flush=True)
            if stop and self.epoch < cfg["epochs"]:
                self._stop(time.monotonic(), save=False)  # last.pt was just written for the finished epoch
        if self.is_main:
            print(f"done in {self.train_seconds / 60:.1f} min; final model: {self.out_dir / 'last.pt'}")
        return self.out_dir

    def _check_finite(self, bad_step, bad_terms, names):
        step = int(bad_step)
        if step < 0:
            return
        terms = ", ".join(f"{k}={v:.4g}" for k, v in zip(names, bad_terms.tolist()))
        last = self.out_dir / "last.pt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        raise NonFiniteLoss(f"the loss became non-finite at optimizer step {step} (epoch {self.epoch + 1}): {terms}; "
                            f"{kept}; try a lower --lr")

    def _save_progress(self, epoch_start):
        self.train_seconds += time.monotonic() - epoch_start
        self.checkpoint()

    def _stop(self, epoch_start, save=True):
        if save:
            self._save_progress(epoch_start)
        signum = self.stop_signal or signal.SIGTERM  # another rank may have received it
        name = signal.Signals(signum).name
        if self.is_main:
            print(f"stopped by {name} at epoch {self.epoch + 1}, step {self.batch_in_epoch}/{self.steps_per_epoch}; "
                  f"checkpoint {self.out_dir / 'last.pt'}; continue with: "
                  f"python {self.cfg['script']}.py --resume {self.out_dir}", file=sys.stderr)
        dist.shutdown()
        sys.exit(128 + signum)


def train(method: str, regime: str, argv=None, **defaults):
    """Parse ``argv`` for the (method, regime) script and train; returns the run directory."""
    cfg, given, _ = parse_config(method, regime, defaults, sys.argv[1:] if argv is None else argv)
    dist.init(cfg["device"])
    try:
        return Trainer(cfg, given).run()
    finally:
        dist.shutdown()


def main(method: str, regime: str, **defaults):
    run_main(train, method, regime, **defaults)
