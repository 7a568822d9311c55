"""Checkpoints: written atomically, read without ever running code from the file."""
import hashlib
import io
import os
import pickle
from pathlib import Path

import torch

from utils.core.errors import UsageError

FORMAT = "cfamc-ssl/1"


def save_checkpoint(state: dict, path) -> None:
    """Write ``state`` to ``path`` so that a crash at any moment leaves the previous file intact.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, and then renamed over
    ``path`` (atomic on POSIX); the directory is fsynced so that the rename itself survives power loss.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save({"format": FORMAT, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write checkpoint {path}: {e.strerror}; "
                         "free disk space or choose another --out-dir") from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and plain values only, never code.

    Returns the dict saved by training (``method``, ``regime``, ``model``, ``config``, ``epoch``,
    ``train_seconds``, ...). A bare state dict (the original code's format) comes back as
    ``{"model": state_dict}``; callers decide what it is. Anything unreadable raises ``UsageError``.
    """
    return load_checkpoint_and_digest(path, map_location)[0]


def checkpoint_file(path) -> Path:
    """The file a checkpoint argument names: a run directory's ``last.pt``, else the path itself."""
    path = Path(path)
    return path / "last.pt" if path.is_dir() else path


def load_checkpoint_and_digest(path, map_location="cpu"):
    """(``load_checkpoint``'s dict, sha1 hex digest of the bytes it was loaded from). The file is read once, so
    the digest names what was loaded even when a live run replaces the file meanwhile."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}; pass the path of a .pt file written by a training script")
    data = path.read_bytes()
    return _checkpoint_dict(data, path, map_location), hashlib.sha1(data).hexdigest()


def _checkpoint_dict(data: bytes, path, map_location) -> dict:
    try:
        obj = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise UsageError(f"refusing to load {path}: it holds more than tensors and plain values "
                         f"({first[:120]})") from None
    except Exception as e:  # a damaged archive fails anywhere in the unpickler (KeyError, EOFError, ...)
        raise UsageError(f"cannot read checkpoint {path}: truncated or not a PyTorch file "
                         f"({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path} is not a checkpoint (it holds a {type(obj).__name__}, not a dict)")
    if obj.get("format") == FORMAT:
        return obj
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"model": obj}
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            return {**obj, "model": obj[key]}
    raise UsageError(f"{path} is not a checkpoint of this project nor a state dict")


def clean_state_dict(state: dict) -> dict:
    """Strip the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    out = {}
    for k, v in state.items():
        while k.startswith(("module.", "_orig_mod.")):
            k = k.split(".", 1)[1]
        out[k] = v
    return out
