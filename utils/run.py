"""Run directories, device selection and JSON files."""
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from .errors import UsageError


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


def write_json(path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(plain(obj), indent=2) + "\n")
    os.replace(tmp, path)


def read_jsonl(path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def append_jsonl(path, obj) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(plain(obj)) + "\n")
