"""A training run's folder: what it resumes from, the configuration it adopts, where it writes, the metrics it
carries over, and its checkpoints (saved by every rank together, written by rank 0, restored per rank)."""
import fcntl
import os
import signal
import sys
from pathlib import Path

import torch

from utils.core import distributed as dist
from utils.core.checkpoint import load_checkpoint, save_checkpoint
from utils.core.cli import eps_label
from utils.core.errors import UsageError
from utils.core.files import append_jsonl, machine, make_dir, new_run_dir, read_jsonl, write_json, write_jsonl
from utils.core.version import code_version
from utils.engine.config import RADII, RUN_LEVEL, THIS_CALL, TIME_LIMIT_EXIT, resolve_saved
from utils.engine.guard import TIME_LIMIT


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


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def adopt_checkpoint_config(cfg, given, state, path):
    """The checkpoint's config becomes the run's; changed settings other than run-level ones are refused."""
    if "method" not in state or "config" not in state:
        raise UsageError(f"{path} is not a training checkpoint of this project; cannot resume from it")
    if "regime_state" not in state:
        raise UsageError(f"{path} was written by an older version of this project; evaluate it, or start a new run")
    saved = resolve_saved(state["config"])
    if (saved["method"], saved["regime"]) != (cfg["method"], cfg["regime"]):
        raise UsageError(f"{path} was trained by {saved['script']}.py ({saved['method']}, {saved['regime']}); "
                         f"resume it with that script")
    changed = [key for key in sorted(given - set(RUN_LEVEL)) if saved.get(key) != cfg[key]]
    if changed:
        asked = ", ".join(f"{_flag(k)} {_shown(k, cfg[k])}" for k in changed)
        was = ", ".join(f"{_flag(k)} {_shown(k, saved.get(k))}" for k in changed)
        raise UsageError(f"cannot resume {path} with {asked}: it was trained with {was}; only "
                         f"{', '.join(map(_flag, RUN_LEVEL))} may change")
    ranks = len(state["rng"])
    if ranks != dist.world_size():
        raise UsageError(f"{path} was written by {ranks} process(es) and this run has {dist.world_size()}: "
                         f"each process has its own random stream and perturbation; resume with {ranks} "
                         f"(torchrun --nproc_per_node {ranks})")
    run_level = {k: cfg[k] for k in RUN_LEVEL if k in given or k in THIS_CALL}
    return {**saved, **run_level}


def _shown(key, value) -> str:
    """A setting's value as its flag takes it: radii as 4/255, the rest as given."""
    return eps_label(value) if key in RADII and isinstance(value, float) else str(value)


def output_dir(cfg, source):
    """(The run folder, whether it continues the source's run): never one that holds another run or that another
    process trains in (rank 0 holds a lock on it for the run's life), never the source's when branching."""
    own = source is not None and source.name == "last.pt"
    if cfg["out_dir"]:
        out = Path(cfg["out_dir"])
    else:  # every rank must write to (and name in messages) rank 0's choice
        out = Path(dist.broadcast_object(str(source.parent if own else new_run_dir(cfg["script"]))))
    if dist.rank() == 0:
        lock_run_folder(make_dir(out))
    continuing = own and out.resolve() == source.parent.resolve()
    if source is not None and not continuing and out.resolve() == source.parent.resolve():
        raise UsageError(f"resuming from {source.name} inside its own run folder would overwrite that run's last.pt "
                         f"and metrics; pass --out-dir NEW_FOLDER for the continued run")
    held = [name for name in ("last.pt", "metrics.jsonl", "config.json") if (out / name).exists()]
    if not continuing and held:
        raise UsageError(f"{out} already holds a run ({held[0]}); continue it with --resume {out}, "
                         f"or choose another --out-dir")
    return out, continuing


_LOCKS = {}  # folder -> the open descriptor whose lock this process holds until it exits


def lock_run_folder(folder: Path) -> None:
    """An exclusive lock on a run folder, held until the process exits (the system drops it then, so no stale lock
    is left): two processes never train into one folder, whose checks they could otherwise both pass."""
    key = str(folder.resolve())
    if key in _LOCKS:
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"another process is training in {folder}; wait for it to end, or choose another "
                         f"--out-dir") from None
    _LOCKS[key] = fd


def unlock_run_folder(folder: Path) -> None:
    fd = _LOCKS.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)


def carry_metrics(source_dir, out_dir, epochs):
    """The run's metrics rows are the source run's first ``epochs`` (a branch starts with them; a resumed run
    drops a row written after its checkpoint, whose epoch it is about to train again)."""
    source = Path(source_dir) / "metrics.jsonl"
    rows = [r for r in read_jsonl(source) if r.get("epoch", 0) <= epochs] if source.is_file() else []
    target = Path(out_dir) / "metrics.jsonl"
    if target.exists() and source.resolve() != target.resolve():
        return
    write_jsonl(target, rows)  # replaced whole: an interruption here leaves the old rows, not a part of them


class RunDir:
    """``RunDir(cfg, given)``: the resolved configuration (``.cfg``, the checkpoint's when resuming), the folder
    (``.path``) and the checkpoint resumed from (``.state``, or None)."""

    def __init__(self, cfg, given):
        self.is_main = dist.rank() == 0
        source = resume_source(cfg)
        self.state = load_checkpoint(source) if source is not None else None
        self.cfg = adopt_checkpoint_config(cfg, given, self.state, source) if self.state else cfg
        out, _ = output_dir(self.cfg, source)
        self.cfg["out_dir"] = str(out)
        self.path = make_dir(out) if self.is_main else out
        if self.is_main and self.state is not None:
            carry_metrics(source.parent, self.path, self.state["epoch"])

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    def write_config(self):
        if self.is_main:
            write_json(self.path / "config.json", self.cfg)

    def log_epoch(self, record: dict, epochs: int):
        """Appends an epoch's metrics row and prints it (rank 0)."""
        if not self.is_main:
            return
        append_jsonl(self.path / "metrics.jsonl", record)
        skip = ("epoch", "step", "lr", "seconds", "images_per_s", "train_seconds")
        terms = "  ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in skip)
        print(f"epoch {record['epoch']}/{epochs}  {terms}  lr {record['lr']:.3g}  {record['seconds']:.1f}s  "
              f"{record['images_per_s']:.0f} img/s", flush=True)

    def names_at(self, epoch: int) -> tuple:
        """The checkpoints written at the end of ``epoch``: last.pt, and epoch_NNNN.pt every --save-every."""
        every = self.cfg["save_every"]
        return ("last.pt", *((f"epoch_{epoch:04d}.pt",) if every and epoch % every == 0 else ()))

    def save(self, state: dict, regime_state: dict, device, names=("last.pt",)):
        """Every rank calls it (its RNG and regime states are gathered); rank 0 writes ``state`` with them to each
        of ``names``. A failed write stops every rank with rank 0's message, so none waits forever at the next
        collective."""
        cuda = device.type == "cuda"
        rngs = dist.gather_objects({"cpu": torch.get_rng_state(),
                                    "cuda": torch.cuda.get_rng_state(device) if cuda else None})
        regime_states = dist.gather_objects(regime_state)
        error = None
        if self.is_main:
            try:
                for name in names:
                    save_checkpoint({**state, "rng": rngs, "regime_state": regime_states,
                                     "train_machines": self.machines(device), "train_code": self.code()},
                                    self.path / name)
            except Exception as e:  # whatever it is, the other ranks must hear of it rather than wait
                error = str(e) if isinstance(e, UsageError) else f"cannot write checkpoint {names[-1]}: {e!r}"
        error = dist.broadcast_object(error)
        if error is not None:
            raise UsageError(error if self.is_main else f"rank 0 could not save the checkpoint: {error}")

    def machines(self, device) -> list:
        """The machines the run has trained on, this one last: the record its checkpoints carry (those written
        before it was kept carry none)."""
        earlier = (self.state or {}).get("train_machines", [])
        here = machine(device)
        return earlier + ([here] if here not in earlier else [])

    def code(self) -> list:
        """The code versions the run has trained with, this one last (``utils.core.version``), kept as the machines
        are."""
        earlier = (self.state or {}).get("train_code", [])
        here = code_version()
        return earlier + ([here] if here not in earlier else [])

    def restore_rng(self, device):
        rng = self.state["rng"][dist.rank()]
        torch.set_rng_state(rng["cpu"])
        if device.type == "cuda" and rng.get("cuda") is not None:
            torch.cuda.set_rng_state(rng["cuda"], device)

    def announce(self, device, images: int, step: int, total_steps: int):
        """The run's start line: its folder, device, data and planned optimizer steps."""
        if not self.is_main:
            return
        cfg = self.cfg
        start = f", continuing from step {step}" if step else ""
        print(f"{cfg['script']}: run folder {self.path}; {device.type}, precision {cfg['precision']}, channels-last "
              f"{cfg['channels_last']}; {images} training images ({cfg['data']}); {cfg['epochs']} epochs, "
              f"{total_steps} optimizer steps{start}", flush=True)

    def done(self, train_seconds: float):
        if self.is_main:
            print(f"done in {train_seconds / 60:.1f} min; final model: {self.last}", flush=True)
            unlock_run_folder(self.path)

    def where(self, epoch: int) -> str:
        kept = f"the last good checkpoint is {self.last}" if self.last.is_file() else "no checkpoint was written yet"
        return f"epoch {epoch + 1}; {kept}"

    def stop(self, reason, epoch, batch, steps_per_epoch):
        """Says where the run stopped and how to continue, and exits: ``reason`` is a signal number (exit status
        128 + it) or ``TIME_LIMIT`` (``TIME_LIMIT_EXIT``)."""
        timed_out = reason == TIME_LIMIT
        if self.is_main:
            cause = f"--time-limit {self.cfg['time_limit']:g} s" if timed_out else signal.Signals(reason).name
            print(f"stopped by {cause} at epoch {epoch + 1}, step {batch}/{steps_per_epoch}; checkpoint {self.last}; "
                  f"continue with: python {self.cfg['script']}.py --resume {self.path}", file=sys.stderr)
        dist.shutdown()
        sys.exit(TIME_LIMIT_EXIT if timed_out else 128 + reason)
