"""The clean teacher of a regime that learns from one (``needs_teacher``, the distill regime): loaded by the
engine, checked against the run's record of it, and handed to the regime as ``learner.teacher``."""
import torch

from utils.core import distributed as dist
from utils.core.errors import UsageError
from utils.engine.encoders import load_encoder


def teacher_identity(meta) -> dict:
    return {"sha1": meta["sha1"], "regime": meta["regime"], "epoch": meta["epoch"],
            "train_seconds": meta["train_seconds"] or 0.0}


def load_teacher(cfg, learner):
    """The teacher encoder on the learner's device (eval mode, frozen), checked against the run's record of it;
    with ``--student-init teacher`` its weights copied into the student."""
    if not cfg["teacher"]:
        raise UsageError("--teacher PATH is required: the last.pt of a standard run of the same method "
                         f"(e.g. main_{cfg['method']}.py --epochs 3 --out-dir teacher)")
    if dist.world_size() > 1:
        raise UsageError("the distill regime trains on one process: run it without torchrun")
    teacher, meta = load_encoder(cfg["teacher"], cfg["method"])
    identity = teacher_identity(meta)
    recorded = cfg.setdefault("teacher_identity", identity)
    if recorded["sha1"] != identity["sha1"]:
        raise UsageError(f"{cfg['teacher']} is not the teacher this run started from (sha1 {recorded['sha1'][:12]}, "
                         f"it holds {identity['sha1'][:12]}): pass that checkpoint as --teacher")
    sizes = {key: meta["config"][key] for key in ("arch", "width", "hidden_dim")}
    if cfg["student_init"] == "teacher":
        if any(cfg[key] != value for key, value in sizes.items()):
            flags = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in sizes.items())
            raise UsageError(f"--student-init teacher needs the teacher's sizes: pass {flags} (or --student-init "
                             f"random)")
        learner.model.load_state_dict(teacher.state_dict())
    teacher = teacher.to(learner.device)
    return teacher.to(memory_format=torch.channels_last) if learner.channels_last else teacher
