"""Datasets as uint8 tensors (N, 3, 32, 32) and int64 labels (N,), ready to live on the training device."""
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import UsageError

DATASETS = ("cifar10", "cifar100", "imagefolder")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}
_PICKLED = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


def stratified_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices (sorted, int64 (n,)) of a class-stratified sample of ``n`` of the images labelled ``labels`` (N,).

    Each class gets its share of ``n`` in proportion to its frequency, rounded by largest remainders (ties to
    the smaller class index), and at least one image when ``n`` is at least the number of classes; the
    images of a class are picked by a permutation seeded from ``seed``. The sample depends only on the labels
    (in their order), ``n`` and ``seed``: every run and every evaluation of the same data takes the same one.
    """
    labels = torch.as_tensor(labels).cpu()
    if not 0 < n <= len(labels):
        raise UsageError(f"cannot take {n} of {len(labels)} images; choose a subset between 1 and {len(labels)}")
    classes, counts = torch.unique(labels, return_counts=True)
    take = _class_shares(counts, n)
    g = torch.Generator().manual_seed(seed)
    picked = []
    for cls, k in zip(classes.tolist(), take.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(picked).sort().values


def _class_shares(counts: torch.Tensor, n: int) -> torch.Tensor:
    """How many of each class (counts (C,)) a stratified sample of n takes; sums to n, each <= its count."""
    quota = counts.double() * n / counts.sum()
    take = quota.floor().long()
    if n >= len(counts):  # a class too rare for a whole share still gets one image
        take.clamp_(min=1)
    while int(take.sum()) != n:
        short = quota - take
        if int(take.sum()) < n:  # the largest remainder gets one more (argmax: the first of equals)
            take[int(short.argmax())] += 1
        else:  # the minimum of one took too much: give back where the share is exceeded most
            take[int(short.masked_fill(take <= 1, float("inf")).argmin())] -= 1
    return take


def load_dataset(name: str, root, train: bool, download: bool = False):
    """Returns (images uint8 (N, 3, 32, 32), labels int64 (N,)).

    ``cifar10`` / ``cifar100``: the original pickled files under ``root`` (``cifar-10-batches-py/`` or
    ``cifar-100-python/``, or ``root`` being that folder), fetched there by torchvision when ``download``.
    ``imagefolder``: ``root/train/<class>/*`` and ``root/test/<class>/*`` images; decoded once and cached
    as ``root/.<split>-uint8.npz``, reused while the folder's file list is unchanged.
    """
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if root is None:
        raise UsageError(f"no data directory given for {name}; pass --data-dir DIR (or set CFAMC_DATA_DIR)")
    root = Path(root).expanduser()
    if name == "imagefolder":
        return _load_imagefolder(root, "train" if train else "test")
    return _load_pickled(name, root, train, download)


def check_dataset(name: str, root) -> None:
    """Both splits of a dataset readable (decoded once and cached), or the one-line error that says what to fix."""
    for train in (True, False):
        load_dataset(name, root, train=train)


def _load_pickled(name, root, train, download):
    folder_name, train_files, test_files, label_key = _PICKLED[name]
    folder = root if root.name == folder_name else root / folder_name
    files = train_files if train else test_files
    if download and not all((folder / f).is_file() for f in files):
        _download(name, folder.parent)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        if (root / "train").is_dir() and (root / "test").is_dir():
            raise UsageError(f"no {name} data at {folder}; {root} holds train/ and test/ folders: "
                             "pass --data imagefolder")
        raise UsageError(
            f"no {name} data at {folder} (missing {missing[0]}); pass --download to fetch it there, "
            f"or --data-dir pointing at the folder that holds {folder_name}/"
        )
    images, labels = [], []
    for f in files:
        try:
            with open(folder / f, "rb") as fh:
                entry = pickle.load(fh, encoding="bytes")
            images.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry[label_key], dtype=np.int64))
        except Exception as e:
            raise UsageError(f"cannot read {folder / f} as a {name} batch ({type(e).__name__}: {e}); "
                             "re-download it") from None
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _download(name, root):
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as e:
        raise UsageError(f"could not download {name} to {root} ({type(e).__name__}: {e})") from None


def _list_images(split_dir: Path):
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    entries = []
    for label, cls in enumerate(classes):
        for f in sorted(os.scandir(split_dir / cls), key=lambda e: e.name):
            if f.is_file() and Path(f.name).suffix.lower() in IMAGE_SUFFIXES:
                entries.append((f"{cls}/{f.name}", f.stat().st_size, label))
    return classes, entries


def _load_imagefolder(root: Path, split: str):
    split_dir = root / split
    if not split_dir.is_dir():
        raise UsageError(
            f"no '{split}' folder in {root}; --data imagefolder expects {root}/{split}/<class>/<image files>"
        )
    try:
        classes, entries = _list_images(split_dir)
    except OSError as e:
        raise UsageError(f"cannot read {split_dir}: {e.strerror}") from None
    if not entries:
        raise UsageError(f"no image files under {split_dir}/<class>/; expected e.g. {split_dir}/cat/0001.jpg")
    signature = hashlib.sha1(repr((classes, [(p, s) for p, s, _ in entries])).encode()).hexdigest()
    cache = root / f".{split}-uint8.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                if str(z["signature"]) == signature:
                    return torch.from_numpy(z["images"]), torch.from_numpy(z["labels"])
        except Exception:
            pass  # an unreadable cache is rebuilt below
    images = np.stack([_decode(split_dir / p) for p, _, _ in entries])
    labels = np.array([label for _, _, label in entries], dtype=np.int64)
    _write_cache(cache, images=images, labels=labels, signature=np.array(signature))
    return torch.from_numpy(images), torch.from_numpy(labels)


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:
        raise UsageError(f"cannot decode image {path} ({type(e).__name__}); remove or replace the file") from None
    if arr.shape[:2] != (32, 32):
        raise UsageError(f"image {path} is {arr.shape[1]}x{arr.shape[0]}, expected 32x32; resize the dataset first")
    return arr.transpose(2, 0, 1)


def _write_cache(path: Path, **arrays):
    """Atomic and best effort: a read-only data folder only costs decoding again next time."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)



def training_images(cfg: dict, images=None, labels=None):
    """(uint8 images, labels or None) a training run trains on: ``images`` when given, else ``--data``'s
    training split (read by rank 0 first, which may download it), cut to ``--subset``."""
    from . import distributed as dist

    if images is None:
        if dist.rank() == 0:
            images, labels = load_dataset(cfg["data"], cfg["data_dir"], train=True, download=cfg["download"])
        dist.barrier()  # the other ranks read what rank 0 may have just downloaded
        if dist.rank() != 0:
            images, labels = load_dataset(cfg["data"], cfg["data_dir"], train=True)
    if cfg["subset"]:
        if labels is None or cfg["subset"] > len(images):
            raise UsageError(f"--subset {cfg['subset']} needs at most {len(images)} labelled images")
        index = stratified_subset(labels, cfg["subset"], cfg["subset_seed"])
        images, labels = images[index], labels[index]
    if cfg["batch_size"] > len(images):
        raise UsageError(f"--batch-size {cfg['batch_size']} is larger than the {len(images)} training images")
    return images, labels
