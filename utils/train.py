"""The training engine behind the six ``main_*.py`` scripts: any registered method (``utils.methods``) under any
registered regime (``utils.regimes``), one loop.

The dataset lives on the training device as uint8; each step indexes a per-epoch permutation, cuts the
views on the device (``augment.MultiViewAugment``) and hands them to the regime, which takes one optimizer
step (or several) through ``Trainer.loss`` and ``Trainer.update``. Run safety (signals, periodic saves, the
clock, the non-finite check) is ``utils.guard.RunGuard``'s.
"""
import argparse
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from augment import PRESETS
from models import ARCHS

from . import distributed as dist
from .blocks import augment_for, encoder_for
from .checkpoint import clean_state_dict, load_checkpoint, save_checkpoint
from .cli import (BoolFlag, Parser, default_data_dir, nonneg_float, nonneg_int, note_batch_size, positive_float,
                  positive_int, run_main)
from .data import DATASETS, load_dataset, stratified_subset
from .errors import UsageError
from .guard import TIME_LIMIT, RunGuard
from .knn import KNNMonitor
from .methods import METHODS
from .optim import LARS, cosine_lr
from .regimes import REGIMES
from .run import append_jsonl, make_dir, new_run_dir, read_jsonl, resolve_device, write_json, write_jsonl

# Settings a resumed run may change: where and how it runs, not what it computes.
RUN_LEVEL = ("device", "log_every", "out_dir", "checkpoint_minutes", "compile", "resume", "data_dir", "download",
             "save_every", "knn_every", "knn_train", "knn_test", "time_limit")
# Settings of this invocation alone: a resumed run never inherits them from its checkpoint.
THIS_CALL = ("out_dir", "resume", "time_limit")
# Exit status of a run stopped by --time-limit (sysexits' EX_TEMPFAIL: run the same command again to go on).
TIME_LIMIT_EXIT = 75


def entry_scripts() -> dict:
    """(method, regime) -> (entry script, its defaults) for every script the registered methods declare."""
    return {(name, regime): row for name, method in METHODS.items() for regime, row in method.scripts.items()}


def script_of(method: str, regime: str):
    """(entry script name, its defaults): the method's declared row, or a generic name and no defaults."""
    return METHODS.lookup(method).scripts.get(regime, (f"train_{method}_{regime}", {}))


def build_parser(method: str, regime: str, defaults: dict) -> Parser:
    method_cls, regime_cls = METHODS.lookup(method), REGIMES.lookup(regime)
    script = script_of(method, regime)[0]
    p = Parser(prog=f"{script}.py", description=f"Train a ResNet encoder with {method_cls.display} ({regime_cls.display}).")
    _data_flags(p.add_argument_group("data"))
    _optimisation_flags(p.add_argument_group("optimisation"), defaults)
    _view_flags(p.add_argument_group("views"), method_cls, defaults)
    g = p.add_argument_group("model and objective")
    g.add_argument("--arch", choices=sorted(ARCHS), default="resnet18")
    g.add_argument("--width", type=positive_int, default=64, help="base channels (64 = ResNet-18)")
    g.add_argument("--hidden-dim", type=positive_int, default=4096, help="projector hidden size")
    method_cls.add_flags(g)
    regime_cls.add_flags(p.add_argument_group(regime_cls.display))
    _run_flags(p.add_argument_group("run"), script, defaults)
    g = p.add_argument_group("monitor (labels are used here only, never for training)")
    g.add_argument("--knn-every", type=nonneg_int, default=1,
                   help="weighted kNN accuracy of the pre-features every N epochs (0: off)")
    g.add_argument("--knn-train", type=positive_int, default=10_000, help="training images the kNN searches")
    g.add_argument("--knn-test", type=positive_int, default=2_000, help="test images the kNN classifies")
    for action in p._actions:  # the script's defaults for its row of the seed's table, whichever group holds them
        action.default = defaults.get(action.dest, action.default)
    return p


def _data_flags(g):
    g.add_argument("--data", choices=DATASETS, default="cifar10", help="dataset layout")
    g.add_argument("--data-dir", default=default_data_dir() or "data",
                   help="dataset root (default: $CFAMC_DATA_DIR or ./data)")
    g.add_argument("--download", action="store_true", help="download CIFAR-10/100 into --data-dir if missing")
    g.add_argument("--subset", type=positive_int, default=None,
                   help="train on N images, a class-stratified sample fixed by the data and --subset-seed")
    g.add_argument("--subset-seed", type=int, default=0, help="which stratified sample --subset takes")


def _optimisation_flags(g, defaults):
    g.add_argument("--epochs", type=positive_int, default=defaults.get("epochs", 10))
    g.add_argument("--batch-size", type=positive_int, default=defaults.get("batch_size", 256), help="images per step (global)")
    g.add_argument("--lr", type=nonneg_float, default=0.3, help="base learning rate (cosine to 0)")
    g.add_argument("--momentum", type=nonneg_float, default=0.9)
    g.add_argument("--weight-decay", type=nonneg_float, default=1e-4)
    g.add_argument("--lars-eta", type=positive_float, default=0.005, help="LARS trust coefficient")


def _view_flags(g, method_cls, defaults):
    if method_cls.views is None:
        g.add_argument("--num-views", type=positive_int, default=defaults.get("num_views", method_cls.default_views),
                       help="views per image")
    g.add_argument("--per-view-forward", action=BoolFlag, default=method_cls.per_view_forward,
                   help="forward each view on its own (BatchNorm statistics per view) rather than all views at once")
    g.add_argument("--clean-apart", action="store_true",
                   help="forward the views an adversary leaves clean apart from the perturbed ones (BatchNorm "
                        "statistics per group; see --clean-views)")
    g.add_argument("--preset", choices=sorted(PRESETS), default=defaults.get("preset", "crop"),
                   help="crop: scale (0.08, 1), ratio (3/4, 4/3); patch: fixed 16x16 patches")
    g.add_argument("--scale-min", type=positive_float, default=None, help="override the preset's crop scale")
    g.add_argument("--scale-max", type=positive_float, default=None)
    g.add_argument("--ratio-min", type=positive_float, default=None, help="override the preset's aspect ratio")
    g.add_argument("--ratio-max", type=positive_float, default=None)


def _run_flags(g, script, defaults):
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU; losses are always float32")
    g.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="channels-last memory format (auto: on CUDA)")
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
    g.add_argument("--time-limit", type=positive_float, default=None,
                   help=f"seconds this process may run: past them, at the next read-back point, save last.pt and "
                        f"exit with status {TIME_LIMIT_EXIT} (resume with --resume)")


def parse_config(method, regime, defaults=None, argv=None):
    """(config dict, the flags given explicitly, parser) for ``argv``; ``defaults`` default to the script's."""
    defaults = script_of(method, regime)[1] if defaults is None else defaults
    parser = build_parser(method, regime, defaults)
    argv = sys.argv[1:] if argv is None else argv
    cfg = vars(parser.parse_args(argv))
    explicit = build_parser(method, regime, defaults)
    for action in explicit._actions:
        action.default = argparse.SUPPRESS
    given = set(vars(explicit.parse_args(argv)))
    cfg.update(method=method, regime=regime, script=script_of(method, regime)[0])
    cfg.setdefault("num_views", METHODS.lookup(method).views)
    _check_views(parser, cfg)
    return cfg, given, parser


def _check_views(parser, cfg):
    for lo, hi in (("scale_min", "scale_max"), ("ratio_min", "ratio_max")):
        flags = f"--{lo.replace('_', '-')} and --{hi.replace('_', '-')}"
        if (cfg[lo] is None) != (cfg[hi] is None):
            parser.error(f"{flags} go together")
        if cfg[lo] is not None and cfg[lo] > cfg[hi]:
            parser.error(f"{flags}: the first must not exceed the second")
    if cfg["scale_max"] is not None and cfg["scale_max"] > 1:
        parser.error("--scale-max must be at most 1 (a fraction of the image area)")
    if cfg["num_views"] < 2:
        parser.error("--num-views must be at least 2 (the objective compares views)")


def resume_source(cfg):
    """The checkpoint ``--resume`` names, or None (nothing to resume)."""
    resume = cfg["resume"]
    if resume is None:
        return None
    if resume == "auto":
        out_dir = cfg["out_dir"]
        candidates = [Path(out_dir) / "last.pt"] if out_dir else sorted(Path("runs", cfg["script"]).glob("*/last.pt"))
        existing = [c for c in candidates if c.is_file()]
        return existing[-1] if existing else None
    path = Path(resume)
    return path / "last.pt" if path.is_dir() else path


def adopt_checkpoint_config(cfg, given, state, path):
    """The checkpoint's config becomes the run's; a changed setting other than a run-level one is refused."""
    if "method" not in state or "config" not in state:
        raise UsageError(f"{path} is not a training checkpoint of this project; cannot resume from it")
    if "regime_state" not in state:
        raise UsageError(f"{path} was written by an older version of this project; evaluate it, or start a new run")
    saved = state["config"]
    if saved.get("regime") in REGIMES:  # settings added since the run started keep the behaviour it trained with
        saved = {**REGIMES[saved["regime"]].legacy, **saved}
    if (saved["method"], saved["regime"]) != (cfg["method"], cfg["regime"]):
        raise UsageError(f"{path} was trained by {saved['script']}.py ({saved['method']}, {saved['regime']}); "
                         f"resume it with that script")
    for key in sorted(given - set(RUN_LEVEL)):
        if saved.get(key) != cfg[key]:
            flag = "--" + key.replace("_", "-")
            raise UsageError(f"cannot resume {path} with {flag} {cfg[key]}: it was trained with {saved.get(key)}; "
                             f"only {', '.join('--' + k.replace('_', '-') for k in RUN_LEVEL)} may change")
    ranks = len(state["rng"])
    if ranks != dist.world_size():
        raise UsageError(f"{path} was written by {ranks} process(es) and this run has {dist.world_size()}: each process "
                         f"has its own random stream and perturbation; resume with {ranks} (torchrun --nproc_per_node {ranks})")
    run_level = {k: cfg[k] for k in RUN_LEVEL if k in given or k in THIS_CALL}
    return {**cfg, **saved, **run_level}  # settings newer than the checkpoint keep their defaults


def output_dir(cfg, source):
    """The run folder: never one that holds another run, never the source's when branching."""
    own = source is not None and source.name == "last.pt"
    if cfg["out_dir"]:
        out = Path(cfg["out_dir"])
    else:  # every rank must write to (and name in messages) rank 0's choice
        out = Path(dist.broadcast_object(str(source.parent if own else new_run_dir(cfg["script"]))))
    continuing = own and out.resolve() == source.parent.resolve()
    if source is not None and not continuing and out.resolve() == source.parent.resolve():
        raise UsageError(f"resuming from {source.name} inside its own run folder would overwrite that run's last.pt "
                         f"and metrics; pass --out-dir NEW_FOLDER for the continued run")
    held = [name for name in ("last.pt", "metrics.jsonl", "config.json") if (out / name).exists()]
    if not continuing and held:
        raise UsageError(f"{out} already holds a run ({held[0]}); continue it with --resume {out}, "
                         f"or choose another --out-dir")
    return out, continuing


class Trainer:
    def __init__(self, cfg, given, images=None, labels=None):
        """``images``: a uint8 (N, 3, H, W) tensor to train on instead of ``--data`` (benchmarks, tests)."""
        self.started = time.monotonic()  # --time-limit counts data loading and compilation too
        self.rank, self.world = dist.rank(), dist.world_size()
        self.is_main = self.rank == 0
        source = resume_source(cfg)
        state = load_checkpoint(source) if source is not None else None
        self.cfg = cfg = adopt_checkpoint_config(cfg, given, state, source) if state else cfg
        self.device = dist.device_for(resolve_device(cfg["device"]))
        self.images = self._training_images(images, labels).to(self.device)
        out, continuing = output_dir(cfg, source)
        cfg["out_dir"] = str(out)
        self.out_dir = make_dir(out) if self.is_main else out
        if self.is_main and state is not None:
            carry_metrics(source.parent, self.out_dir, state["epoch"])
        self._build_model()
        self._build_views_and_regime()
        self.knn = self._build_monitor() if self.is_main else None
        self.epoch, self.batch_in_epoch, self.step, self.train_seconds = 0, 0, 0, 0.0
        # Augmentation draws differ per rank; initial weights and data order agree (seeded / per epoch).
        torch.manual_seed(cfg["seed"] + 1_000_003 * (self.rank + 1))
        if state is not None:
            self._restore(state)

    def _training_images(self, images, labels):
        cfg = self.cfg
        if cfg["batch_size"] % self.world:
            raise UsageError(f"--batch-size {cfg['batch_size']} must be divisible by the {self.world} processes")
        self.local_batch = cfg["batch_size"] // self.world
        note_batch_size(cfg["batch_size"])
        if images is None:
            images, labels = self._load_data()
        if cfg["subset"]:
            if labels is None or cfg["subset"] > len(images):
                raise UsageError(f"--subset {cfg['subset']} needs at most {len(images)} labelled images")
            index = stratified_subset(labels, cfg["subset"], cfg["subset_seed"])
            images, labels = images[index], labels[index]
        self.labels = labels
        if cfg["batch_size"] > len(images):
            raise UsageError(f"--batch-size {cfg['batch_size']} is larger than the {len(images)} training images")
        self.steps_per_epoch = len(images) // cfg["batch_size"]
        return images

    def _load_data(self):
        cfg = self.cfg
        if self.is_main:
            data = load_dataset(cfg["data"], cfg["data_dir"], train=True, download=cfg["download"])
        dist.barrier()  # the other ranks read what rank 0 may have just downloaded
        if not self.is_main:
            data = load_dataset(cfg["data"], cfg["data_dir"], train=True)
        return data

    def _build_model(self):
        cfg, cuda = self.cfg, self.device.type == "cuda"
        self.amp = cfg["precision"] == "bf16" or (cfg["precision"] == "auto" and cuda)
        self.channels_last = cfg["channels_last"] == "on" or (cfg["channels_last"] == "auto" and cuda)
        self.log_every = cfg["log_every"] or (50 if cuda else 1)
        if cuda:
            enable_cudnn_autotuning()
        torch.manual_seed(cfg["seed"])
        self.method = METHODS.lookup(cfg["method"])(cfg)
        self.model = encoder_for(cfg["method"], cfg["arch"], cfg["width"], cfg["hidden_dim"]).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = LARS(self.model.parameters(), cfg["lr"], cfg["momentum"], cfg["weight_decay"], cfg["lars_eta"])
        wrapped = dist.wrap_model(self.model, self.device, cfg["sync_bn"])
        # Attacks run the bare model: DDP's reducer expects parameter gradients after every forward.
        self.attack_net = torch.compile(self.model) if cfg["compile"] else self.model
        self.net = self.attack_net if wrapped is self.model else (torch.compile(wrapped) if cfg["compile"] else wrapped)

    def _build_views_and_regime(self):
        cfg = self.cfg
        scale = (cfg["scale_min"], cfg["scale_max"]) if cfg["scale_min"] is not None else None
        ratio = (cfg["ratio_min"], cfg["ratio_max"]) if cfg["ratio_min"] is not None else None
        self.augment = augment_for(cfg["num_views"], cfg["method"], cfg["preset"], scale=scale, ratio=ratio)
        clean_views = self.method.run_clean_views
        if clean_views >= cfg["num_views"]:
            raise UsageError(f"--clean-views {clean_views} leaves no view of the {cfg['num_views']} to perturb; "
                             f"choose at most {cfg['num_views'] - 1}")
        if cfg.get("clean_apart") and not clean_views:
            raise UsageError("--clean-apart forwards the clean views apart: it needs --clean-views K (K >= 1) in an "
                             "adversarial regime")
        self.clean_rows = clean_views * self.local_batch
        self.perturbed_shape = (cfg["num_views"] * self.local_batch - self.clean_rows, 3, 32, 32)
        regime = REGIMES.lookup(cfg["regime"])
        self.regime = regime(cfg, self)
        self.total_steps = cfg["epochs"] * self.steps_per_epoch * regime.steps_per_batch(cfg)

    def _build_monitor(self):
        cfg = self.cfg
        if not cfg["knn_every"] or self.labels is None:
            return None
        if len(self.labels.unique()) < 2:
            print("note: the training images carry fewer than 2 classes; no kNN monitor", file=sys.stderr)
            return None
        try:
            test_images, test_labels = load_dataset(cfg["data"], cfg["data_dir"], train=False)
        except UsageError as e:
            print(f"note: no kNN monitor, the test images are not readable ({e})", file=sys.stderr)
            return None
        return KNNMonitor(self.images, self.labels, test_images, test_labels, cfg["knn_train"], cfg["knn_test"],
                          cfg["seed"])

    def knn_accuracy(self):
        with self._autocast():
            return self.knn.monitor(lambda x: self.model.features(x, "pre"), self.device, model=self.model)

    # ----- checkpoints -------------------------------------------------------------------------
    def _restore(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.train_seconds = state["train_seconds"]
        self.regime.load_state_dict(state["regime_state"][self.rank])
        rng = state["rng"][self.rank]
        torch.set_rng_state(rng["cpu"])
        if self.device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def checkpoint(self, name="last.pt"):
        """Every rank calls it (its RNG state and regime state are gathered); rank 0 writes. A failed write
        stops every rank with rank 0's message, so none waits forever at the next collective."""
        cuda = self.device.type == "cuda"
        rngs = dist.gather_objects({"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if cuda else None})
        regime_states = dist.gather_objects(self.regime.state_dict())
        error = None
        if self.is_main:
            try:
                save_checkpoint(self._state(rngs, regime_states), self.out_dir / name)
            except Exception as e:  # whatever it is, the other ranks must hear of it rather than wait
                error = str(e) if isinstance(e, UsageError) else f"cannot write checkpoint {name}: {e!r}"
        error = dist.broadcast_object(error)
        if error is not None:
            raise UsageError(error if self.is_main else f"rank 0 could not save the checkpoint: {error}")

    def _state(self, rngs, regime_states):
        return {"method": self.cfg["method"], "regime": self.cfg["regime"],
                "model": clean_state_dict(self.model.state_dict()), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                "train_seconds": self.train_seconds, "rng": rngs, "regime_state": regime_states,
                "config": dict(self.cfg)}

    # ----- what a regime calls -----------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def loss(self, views, net=None):
        """(V*b, 3, H, W) view-major views -> (loss, terms), the method's objective over the global batch."""
        return self.method.loss(self.embed(views, net))

    def attack_loss(self, views, net=None):
        """(V*b, 3, H, W) view-major views -> the scalar a PGD attack maximises (the method's ``attack_loss``)."""
        return self.method.attack_loss(self.embed(views, net))

    def embed(self, views, net=None):
        """(V*b, 3, H, W) view-major views -> (V, B, d) embeddings over the global batch."""
        net, batch = self.net if net is None else net, len(views) // self.cfg["num_views"]
        with self._autocast():
            z = torch.cat([self.method.embed(net, group, batch) for group in self.forward_groups(views)])
        return dist.gather_views(z.view(self.cfg["num_views"], -1, z.shape[-1]))

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)

    def forward_groups(self, views):
        """The rows forwarded together: all, or with ``--clean-apart`` the clean views apart from the perturbed
        ones (BatchNorm statistics of each group its own; two forwards)."""
        k = self.clean_rows
        if not self.cfg.get("clean_apart") or not 0 < k < len(views):
            return (views,)
        return views[:k], views[k:]

    def update(self, loss, zero_grad=True):
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_lr(self.step, self.total_steps, self.cfg["lr"])
        if zero_grad:
            self.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.step += 1

    def term_names(self) -> tuple:
        """What a step's (loss, terms) hold: the loss, the method's terms, then the regime's."""
        return ("loss", *self.method.term_names, *REGIMES.lookup(self.cfg["regime"]).terms(self.cfg))

    def train_step(self, batch):
        """(b, 3, H, W) uint8 images -> (loss, terms) after the regime's optimizer step(s)."""
        views = self.augment(batch)
        if self.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        return self.regime.step(views)

    # ----- the loop ------------------------------------------------------------------------------
    def run(self):
        if self.is_main:
            write_json(self.out_dir / "config.json", self.cfg)
        guard = RunGuard(self._save_progress, self._stop, self._where, self.term_names(),
                         log_every=self.log_every, checkpoint_minutes=self.cfg["checkpoint_minutes"],
                         seconds=self.train_seconds, device=self.device, is_main=self.is_main,
                         deadline=self.started + self.cfg["time_limit"] if self.cfg.get("time_limit") else None)
        with guard:
            while self.epoch < self.cfg["epochs"]:
                summary = self._train_epoch(guard)
                self._end_epoch(guard, summary)
        if not (self.out_dir / "last.pt").exists():  # a branch from a finished run's checkpoint: its model here too
            self.checkpoint()
        if self.is_main:
            print(f"done in {self.train_seconds / 60:.1f} min; final model: {self.out_dir / 'last.pt'}")
        return self.out_dir

    def _train_epoch(self, guard):
        cfg = self.cfg
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(
            cfg["seed"] * 1_000_003 + self.epoch)).to(self.device)
        guard.start_epoch(f"epoch {self.epoch + 1}/{cfg['epochs']}", self.batch_in_epoch, self.steps_per_epoch,
                          cfg["batch_size"])
        for b in range(self.batch_in_epoch, self.steps_per_epoch):
            start = b * cfg["batch_size"] + self.rank * self.local_batch
            loss, terms = self.train_step(self.images[order[start: start + self.local_batch]])
            self.batch_in_epoch = b + 1
            guard.after_step(torch.stack([loss.detach().float(), *terms]), self.step, b + 1)
        return guard.end_epoch()

    def _end_epoch(self, guard, summary):
        """Monitor, metrics row, then checkpoints (the row first: a resumed run drops rows past its checkpoint);
        none of it counts as training time."""
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.train_seconds = guard.seconds()
        if self.knn is not None and self.epoch % self.cfg["knn_every"] == 0:
            summary["means"]["knn"] = guard.paused(lambda _: self.knn_accuracy())
        if self.is_main and summary["done"]:
            self._log_epoch(summary)
        guard.paused(lambda _: self._save_epoch())
        if guard.stop_agreed() and self.epoch < self.cfg["epochs"]:
            self._stop(guard.stop_reason())

    def _save_epoch(self):
        self.checkpoint()
        if self.cfg["save_every"] and self.epoch % self.cfg["save_every"] == 0:
            self.checkpoint(f"epoch_{self.epoch:04d}.pt")

    def _log_epoch(self, summary):
        record = {"epoch": self.epoch, "step": self.step, **summary["means"],
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(summary["seconds"], 3),
                  "images_per_s": round(summary["images_per_s"], 1), "train_seconds": round(self.train_seconds, 3)}
        append_jsonl(self.out_dir / "metrics.jsonl", record)
        terms = "  ".join(f"{k} {v:.4g}" for k, v in summary["means"].items())
        print(f"epoch {self.epoch}/{self.cfg['epochs']}  {terms}  lr {record['lr']:.3g}  "
              f"{summary['seconds']:.1f}s  {summary['images_per_s']:.0f} img/s", flush=True)

    def _save_progress(self, seconds):
        self.train_seconds = seconds
        self.checkpoint()

    def _where(self):
        last = self.out_dir / "last.pt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        return f"epoch {self.epoch + 1}; {kept}"

    def _stop(self, reason):
        """Exits after the checkpoint: ``reason`` is a signal number or ``TIME_LIMIT``."""
        timed_out = reason == TIME_LIMIT
        if self.is_main:
            cause = f"--time-limit {self.cfg['time_limit']:g} s" if timed_out else signal.Signals(reason).name
            print(f"stopped by {cause} at epoch {self.epoch + 1}, step {self.batch_in_epoch}/"
                  f"{self.steps_per_epoch}; checkpoint {self.out_dir / 'last.pt'}; continue with: "
                  f"python {self.cfg['script']}.py --resume {self.out_dir}", file=sys.stderr)
        dist.shutdown()
        sys.exit(TIME_LIMIT_EXIT if timed_out else 128 + reason)


def enable_cudnn_autotuning():
    """Every training step has the same shapes, so cuDNN's one-off search for the fastest convolution
    algorithms pays for itself within a few steps."""
    torch.backends.cudnn.benchmark = True


def carry_metrics(source_dir, out_dir, epochs):
    """The run's metrics rows are the source run's first ``epochs`` (a branch starts with them; a resumed run
    drops a row written after its checkpoint, whose epoch it is about to train again)."""
    source = Path(source_dir) / "metrics.jsonl"
    rows = [r for r in read_jsonl(source) if r.get("epoch", 0) <= epochs] if source.is_file() else []
    target = Path(out_dir) / "metrics.jsonl"
    if target.exists() and source.resolve() != target.resolve():
        return
    write_jsonl(target, rows)  # replaced whole: an interruption here leaves the old rows, not a part of them


def train(method: str, regime: str, argv=None, defaults=None):
    """Parse ``argv`` for the (method, regime) script and train; returns the run directory."""
    cfg, given, _ = parse_config(method, regime, defaults, argv)
    dist.init(cfg["device"])
    try:
        out = Trainer(cfg, given).run()
        dist.barrier()  # tearing gloo down while a peer still talks to it aborts that peer at exit
        return out
    finally:
        dist.shutdown()


def main(method: str, regime: str):
    run_main(train, method, regime)
