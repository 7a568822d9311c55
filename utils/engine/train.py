"""The training engine behind the six ``main_*.py`` scripts: any registered method (``utils.methods``) under any
registered regime (``utils.regimes``), one loop.

The dataset lives on the training device as uint8; each step indexes a per-epoch permutation, cuts the views
on the device (``augment.MultiViewAugment``) and hands them to the regime, which takes one optimizer step (or
several) through ``Trainer.loss`` and ``Trainer.update``. The run's folder, configuration and checkpoints are
``utils.engine.rundir.RunDir``'s; run safety (signals, periodic saves, the clock, the non-finite check) is
``utils.engine.guard.RunGuard``'s.
"""
import time
from contextlib import nullcontext

import torch

from utils.core import distributed as dist
from utils.core.checkpoint import clean_state_dict
from utils.core.cli import run_main
from utils.core.data import training_images
from utils.core.files import resolve_device
from utils.engine.blocks import resolve_sizes, run_augment, run_encoder
from utils.engine.config import parse_config
from utils.engine.ema import WeightAverage
from utils.engine.guard import RunGuard
from utils.engine.knn import monitor_for
from utils.engine.layout import choose_layout, layout_seconds
from utils.engine.optim import LARS, cosine_lr
from utils.engine.rundir import RunDir
from utils.engine.teacher import load_teacher
from utils.studies.ablation import method_class, regime_class

# Where a run is: saved in every checkpoint, restored on resume.
PROGRESS = ("epoch", "batch_in_epoch", "step", "train_seconds")


class Trainer:
    def __init__(self, cfg, given, images=None, labels=None):
        """``images``: a uint8 (N, 3, H, W) tensor to train on instead of ``--data`` (benchmarks, tests)."""
        self.started = time.monotonic()  # --time-limit counts data loading and compilation too
        self.rank = dist.rank()
        self.run_dir = RunDir(cfg, given)
        self.cfg = cfg = self.run_dir.cfg
        self.device = dist.device_for(resolve_device(cfg["device"]))
        self.local_batch = dist.local_batch(cfg["batch_size"])
        images, self.labels = training_images(cfg, images, labels)
        resolve_sizes(cfg, images)
        cfg["channels_last"] = resolve_channels_last(cfg, self.device)
        self.images = images.to(self.device)
        self.steps_per_epoch = len(images) // cfg["batch_size"]
        self._build()
        self.knn = monitor_for(cfg, self.images, self.labels) if self.rank == 0 else None
        self.epoch, self.batch_in_epoch, self.step, self.train_seconds = 0, 0, 0, 0.0
        if self.run_dir.state is not None:
            self._restore(self.run_dir.state)
        else:  # augmentation draws differ per rank; initial weights and data order agree (seeded / per epoch)
            torch.manual_seed(cfg["seed"] + 1_000_003 * (self.rank + 1))

    def _build(self):
        cfg = self.cfg
        self.amp, self.channels_last, self.log_every = device_settings(cfg, self.device)
        self.method = method_class(cfg)(cfg)
        self.model, self.optimizer, self.net, self.ema = build_model(cfg, self.device, self.channels_last)
        self.augment = run_augment(cfg)
        self.clean_rows = cfg["clean_views"] * self.local_batch
        rows = cfg["num_views"] * self.local_batch - self.clean_rows
        self.perturbed_shape = (rows, 3, self.augment.size, self.augment.size)
        self.regime = build_regime(cfg, self)
        self.total_steps = cfg["epochs"] * self.steps_per_epoch * type(self.regime).steps_per_batch(cfg)

    def _restore(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.batch_in_epoch, self.step, self.train_seconds = (state[key] for key in PROGRESS)
        self.regime.load_state_dict(state["regime_state"][self.rank])
        self.ema.load_state_dict(state.get("ema"))
        self.run_dir.restore_rng(self.device)

    def checkpoint(self, names=("last.pt",)):
        state = {"method": self.cfg["method"], "regime": self.cfg["regime"], "config": dict(self.cfg),
                 "model": clean_state_dict(self.model.state_dict()), "optimizer": self.optimizer.state_dict(),
                 **{key: getattr(self, key) for key in PROGRESS}, "ema": self.ema.state_dict()}
        self.run_dir.save(state, self.regime.state_dict(), self.device, names)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def embed(self, views, net=None):
        """(V*b, 3, H, W) view-major views -> (V, B, d) embeddings over the global batch."""
        with self.autocast():
            z = self.method.embed(net or self.net, views, len(views) // self.cfg["num_views"])
        return dist.gather_views(z.view(self.cfg["num_views"], -1, z.shape[-1]))

    def loss(self, views, net=None):
        """(V*b, 3, H, W) view-major views -> (loss, terms), the method's objective over the global batch."""
        return self.method.loss(self.embed(views, net))

    def attack_loss(self, views, net=None):
        """(V*b, 3, H, W) view-major views -> the scalar a PGD attack maximises (the method's ``attack_loss``)."""
        return self.method.attack_loss(self.embed(views, net))

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)

    def update(self, loss, zero_grad=True):
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_lr(self.step, self.total_steps, self.cfg["lr"])
        if zero_grad:
            self.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.step += 1

    def term_names(self) -> tuple:
        """What a step's (loss, terms) hold: the loss, then the terms the regime names."""
        return ("loss", *type(self.regime).logged_terms(self.cfg, self.method))

    def train_step(self, batch):
        """(b, 3, H, W) uint8 images -> (loss, terms) after the regime's optimizer step(s)."""
        views = self.augment(batch, strength=view_strength(self.cfg, self.step, self.total_steps))
        if self.channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        return self.regime.step(views)

    def knn_accuracy(self):
        with self.autocast():
            return self.knn.monitor(lambda x: self.model.features(x, "pre"), self.device, model=self.model)

    def run(self):
        self.run_dir.write_config()
        cfg = self.cfg
        deadline = self.started + cfg["time_limit"] if cfg["time_limit"] else None
        guard = RunGuard(self._save_progress, self._stop, lambda: self.run_dir.where(self.epoch), self.term_names(),
                         log_every=self.log_every, checkpoint_minutes=cfg["checkpoint_minutes"],
                         seconds=self.train_seconds, device=self.device, is_main=self.rank == 0, deadline=deadline,
                         progress_seconds=cfg["progress_seconds"])
        self.run_dir.announce(self.device, len(self.images), self.step, self.total_steps)
        with guard:
            while self.epoch < cfg["epochs"]:
                self._train_epoch(guard)
                self._end_epoch(guard)
        if not self.run_dir.last.exists():  # a branch from a finished run's checkpoint: its model here too
            self.checkpoint()
        self.run_dir.done(self.train_seconds)
        return self.run_dir.path

    def _train_epoch(self, guard):
        cfg = self.cfg
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(
            cfg["seed"] * 1_000_003 + self.epoch)).to(self.device)
        guard.start_epoch(f"epoch {self.epoch + 1}/{cfg['epochs']}", self.batch_in_epoch, self.steps_per_epoch,
                          cfg["batch_size"], (cfg["epochs"] - self.epoch - 1) * self.steps_per_epoch)
        for b in range(self.batch_in_epoch, self.steps_per_epoch):
            start = b * cfg["batch_size"] + self.rank * self.local_batch
            loss, terms = self.train_step(self.images[order[start: start + self.local_batch]])
            self.batch_in_epoch = b + 1
            guard.after_step(torch.stack([loss.detach().float(), *terms]), self.step, b + 1)

    def _end_epoch(self, guard):
        """Monitor, metrics row, then checkpoints (the row first: a resumed run drops rows past its checkpoint);
        none of it counts as training time."""
        summary = guard.end_epoch()
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.train_seconds = guard.seconds()
        if self.knn is not None and self.epoch % self.cfg["knn_every"] == 0:
            summary["means"]["knn"] = guard.paused(lambda _: self.knn_accuracy())
        if summary["done"]:
            self._log_epoch(summary)
        guard.paused(lambda _: self.checkpoint(self.run_dir.names_at(self.epoch)))
        if guard.stop_agreed() and self.epoch < self.cfg["epochs"]:
            self._stop(guard.stop_reason())

    def _log_epoch(self, summary):
        self.run_dir.log_epoch({"epoch": self.epoch, "step": self.step, **summary["means"],
                                "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(summary["seconds"], 3),
                                "images_per_s": round(summary["images_per_s"], 1),
                                "train_seconds": round(self.train_seconds, 3)}, self.cfg["epochs"])

    def _save_progress(self, seconds):
        self.train_seconds = seconds
        self.checkpoint()

    def _stop(self, reason):
        """Exits after the checkpoint: ``reason`` is a signal number or ``TIME_LIMIT``."""
        self.run_dir.stop(reason, self.epoch, self.batch_in_epoch, self.steps_per_epoch)


def build_regime(cfg: dict, learner):
    """The run's regime (the ablation switches in front); a regime that learns from a teacher finds it loaded
    as ``learner.teacher``."""
    regime = regime_class(cfg)
    learner.teacher = load_teacher(cfg, learner) if regime.needs_teacher else None
    return regime(cfg, learner)


def view_strength(cfg: dict, step: int, total_steps: int) -> float:
    """The views' augmentation strength at optimizer step ``step`` (``augment.at_strength``): 1 at the run's first
    step to --view-strength-end after its last, linearly (DynACL's annealing, per step rather than per epoch)."""
    return 1 - (1 - cfg["view_strength_end"]) * step / total_steps


def resolve_channels_last(cfg: dict, device) -> str:
    """--channels-last auto as 'on' or 'off', once, when a run starts (a resumed run keeps it): see
    ``utils.engine.layout``; the CPU's probe times a fresh encoder of the run's sizes, and rank 0's choice holds for
    every rank."""
    def probe():
        seconds = None
        if dist.rank() == 0:
            with torch.random.fork_rng(devices=[]):
                model = run_encoder(cfg).to(device)
                views = torch.rand(32, 3, cfg["view_size"], cfg["view_size"], device=device)
            seconds = layout_seconds(model, views)
        return dist.broadcast_object(seconds)

    return choose_layout(cfg["channels_last"], device, cfg["width"], cfg["view_size"], probe)  # the start line says


def device_settings(cfg: dict, device) -> tuple:
    """(bf16 autocast, channels-last, losses read back every N steps) of a run on ``device``."""
    cuda = device.type == "cuda"
    amp = cfg["precision"] == "bf16" or (cfg["precision"] == "auto" and cuda)
    channels_last = cfg["channels_last"] == "on"
    if cuda:
        enable_cudnn_autotuning()
    return amp, channels_last, cfg["log_every"] or (50 if cuda else 1)


def build_model(cfg: dict, device, channels_last: bool) -> tuple:
    """(the bare encoder, seeded from --seed, its LARS optimizer, what training steps run: the encoder, or its
    DDP wrapper across processes, and the average of its weights that follows every optimizer step, --ema-decay).
    ``--compile`` compiles the encoder in place, so that its state dict keeps its names and attacks, which run the
    bare encoder, run the compiled forward too."""
    torch.manual_seed(cfg["seed"])
    model = run_encoder(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = LARS(model.parameters(), cfg["lr"], cfg["momentum"], cfg["weight_decay"], cfg["lars_eta"])
    ema = WeightAverage(model, cfg["ema_decay"])
    ema.follow(optimizer)
    if cfg["compile"]:
        model.compile()
    return model, optimizer, dist.wrap_model(model, device, cfg["sync_bn"]), ema


def enable_cudnn_autotuning():
    """Every training step has the same shapes, so cuDNN's one-off search for the fastest convolution
    algorithms pays for itself within a few steps."""
    torch.backends.cudnn.benchmark = True


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
