"""Run directories, device selection and JSON files."""
import fcntl
import json
import math
import os
import platform
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import torch

from utils.core.errors import UsageError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was given but this machine has no usable CUDA GPU; use --device cpu")
    return torch.device(name)


def machine(device="cpu") -> str:
    """The hardware a timing was taken on: 'NVIDIA H100 80GB HBM3, torch 2.x' or the CPU model and torch threads."""
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{_cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, torch {torch.__version__}"


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def make_dir(path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UsageError(f"cannot write to output directory {path}: {e.strerror}; choose another --out-dir") from None
    return path


def new_run_dir(script: str) -> Path:
    """runs/<script>/<timestamp>, with a suffix if a run started in the same second took that name."""
    base = Path("runs") / script / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def plain(value):
    """JSON-safe copy: non-finite floats become strings rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path, obj, exclusive=False) -> None:
    """Writes ``obj`` atomically. With ``exclusive``, only if ``path`` does not exist yet: FileExistsError
    otherwise, and nothing is replaced."""
    write_text_atomic(path, json.dumps(plain(obj), indent=2) + "\n", exclusive)


def write_jsonl(path, rows) -> None:
    """All of ``rows``, one JSON line each, at once: an interruption leaves the old file or the new one."""
    write_text_atomic(path, "".join(json.dumps(plain(r)) + "\n" for r in rows))


def write_text_atomic(path, text: str, exclusive=False) -> None:
    """``text`` to ``path`` through a temporary file of this writer's own (two writers never share one), then
    renamed over ``path`` or, with ``exclusive``, linked to it (a link is never made over an existing file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "x") as fh:
            fh.write(text)
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def folder_lock(folder):
    """An exclusive lock on ``folder`` for the block: writers that check a name and then write it take turns.
    The system releases it if the process dies, so no stale lock is ever left behind."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_jsonl(path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def append_jsonl(path, obj) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(plain(obj)) + "\n")
