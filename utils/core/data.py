"""Datasets as uint8 tensors (N, 3, H, W) and int64 labels (N,), ready to live on the training device.

CIFAR-10/100 are 32x32 and STL-10 96x96; an image folder holds images of one size, or of any sizes with
``image_size`` given. ``image_size`` resizes every image once, when it is read (an image folder's cache keeps the
resized copy): bilinear with antialiasing, PIL's filter, after a centre crop to a square where an image is not
one. STL-10's unlabeled images carry the label -1."""
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from utils.core import distributed as dist
from utils.core.errors import UsageError

DATASETS = ("cifar10", "cifar100", "stl10", "imagefolder")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}
_PICKLED = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}
STL10_FOLDER, STL10_SIDE = "stl10_binary", 96
UNLABELED = -1


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


def load_dataset(name: str, root, train: bool, download: bool = False, image_size: int | None = None,
                 unlabeled: bool = False):
    """Returns (images uint8 (N, 3, S, S), labels int64 (N,)), S = ``image_size`` or the data set's own.

    ``cifar10`` / ``cifar100``: the original pickled files under ``root`` (``cifar-10-batches-py/`` or
    ``cifar-100-python/``, or ``root`` being that folder), fetched there by torchvision when ``download``.
    ``stl10``: the binary files under ``root/stl10_binary/`` (or ``root`` being it), fetched likewise; the
    training split is the 5,000 labelled images, followed with ``unlabeled`` by the 100,000 unlabeled ones.
    ``imagefolder``: ``root/train/<class>/*`` and ``root/test/<class>/*`` images; decoded once and cached
    as ``root/.<split>-uint8.npz`` (``.<split>-<S>px-uint8.npz`` resized), reused while the folder's file
    list is unchanged.
    """
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if root is None:
        raise UsageError(f"no data directory given for {name}; pass --data-dir DIR (or set CFAMC_DATA_DIR)")
    if image_size is not None and image_size < 8:
        raise UsageError(f"--image-size {image_size} is too small; choose at least 8 pixels")
    root = Path(root).expanduser()
    if name == "imagefolder":
        return _load_imagefolder(root, "train" if train else "test", image_size)
    if name == "stl10":
        return _load_stl10(root, train, download, unlabeled and train, image_size)
    images, labels = _load_pickled(name, root, train, download)
    return resize_images(images, image_size), labels


def check_dataset(name: str, root, image_size: int | None = None) -> dict:
    """Both splits of a dataset readable (decoded once and cached), or the one-line error that says what to fix;
    returns the number of labelled images of each split, {"train": n, "test": n}."""
    return {split: len(load_dataset(name, root, train=split == "train", image_size=image_size)[1])
            for split in ("train", "test")}


def resize_images(images: torch.Tensor, size: int | None, chunk: int = 2048) -> torch.Tensor:
    """uint8 (N, 3, H, W) square images -> uint8 (N, 3, size, size), bilinear with antialiasing (PIL's
    filter up to rounding); unchanged when ``size`` is None or already theirs."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):  # a float copy of 100,000 STL-10 images would take 11 GB
        x = images[start:start + chunk].float()
        y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


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


def _load_stl10(root, train, download, unlabeled, image_size, chunk=5000):
    """The images of the split's binary files (each 3 x 96 x 96, every channel stored column by column) and
    their labels (1 to 10 in the files; UNLABELED for the unlabeled images), resized chunk by chunk into one
    tensor: 100,000 images are 2.8 GB at 96x96, and no second copy of them is made."""
    folder = root if root.name == STL10_FOLDER else root / STL10_FOLDER
    files = [("train_X.bin", "train_y.bin") if train else ("test_X.bin", "test_y.bin")]
    files += [("unlabeled_X.bin", None)] if unlabeled else []
    needed = [f for pair in files for f in pair if f]
    if download and not all((folder / f).is_file() for f in needed):
        _download("stl10", folder.parent)
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise UsageError(f"no stl10 data at {folder} (missing {missing[0]}); pass --download to fetch it there, "
                         f"or --data-dir pointing at the folder that holds {STL10_FOLDER}/")
    raws = [_stl10_images(folder / x) for x, _ in files]
    labels = torch.cat([_stl10_labels(folder, y, len(raw)) for raw, (_, y) in zip(raws, files)])
    side = image_size or STL10_SIDE
    images, start = torch.empty((len(labels), 3, side, side), dtype=torch.uint8), 0
    for raw in raws:
        for i in range(0, len(raw), chunk):
            block = torch.from_numpy(np.ascontiguousarray(raw[i:i + chunk].transpose(0, 1, 3, 2)))
            images[start:start + len(block)] = resize_images(block, image_size)
            start += len(block)
    return images, labels


def _stl10_images(path):
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    if raw.size % (3 * STL10_SIDE * STL10_SIDE):
        raise UsageError(f"{path} is not a whole number of 96x96 images ({raw.size} bytes); re-download it")
    return raw.reshape(-1, 3, STL10_SIDE, STL10_SIDE)


def _stl10_labels(folder, name, n):
    if name is None:
        return torch.full((n,), UNLABELED, dtype=torch.int64)
    labels = np.fromfile(folder / name, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != n or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise UsageError(f"{folder / name} does not hold labels 1 to 10 for the {n} images beside it; "
                         "re-download the data set")
    return torch.from_numpy(labels)


def _download(name, root):
    import torchvision

    try:
        if name == "stl10":  # one archive holds every split
            torchvision.datasets.STL10(str(root), split="train", download=True)
        else:
            cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
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


def _load_imagefolder(root: Path, split: str, image_size=None):
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
    cache = root / (f".{split}-uint8.npz" if image_size is None else f".{split}-{image_size}px-uint8.npz")
    if cache.is_file():
        try:
            with np.load(cache) as z:
                if str(z["signature"]) == signature:
                    return torch.from_numpy(z["images"]), torch.from_numpy(z["labels"])
        except Exception:
            pass  # an unreadable cache is rebuilt below
    first = _decode(split_dir / entries[0][0], image_size)
    images = np.empty((len(entries), *first.shape), dtype=np.uint8)
    for i, (path, _, _) in enumerate(entries):
        images[i] = _decode(split_dir / path, image_size, first.shape[1:], entries[0][0])
    labels = np.array([label for _, _, label in entries], dtype=np.int64)
    _write_cache(cache, images=images, labels=labels, signature=np.array(signature))
    return torch.from_numpy(images), torch.from_numpy(labels)


def _decode(path: Path, image_size=None, expected=None, first=None) -> np.ndarray:
    """(3, H, W) uint8 of one image; with ``image_size``, its centre square resized to that side (PIL's
    antialiased bilinear), else as stored, which must be ``expected`` (the size of the ``first`` image)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if image_size is not None:
                side = min(im.size)
                left, top = (im.width - side) // 2, (im.height - side) // 2
                im = im.crop((left, top, left + side, top + side)).resize((image_size, image_size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:
        raise UsageError(f"cannot decode image {path} ({type(e).__name__}); remove or replace the file") from None
    if expected is not None and arr.shape[:2] != tuple(expected):
        raise UsageError(f"image {path} is {arr.shape[1]}x{arr.shape[0]}, {first} is {expected[1]}x{expected[0]}; "
                         f"pass --image-size N to resize every image to NxN")
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
    training split (read by rank 0 first, which may download it; STL-10's with its unlabeled images unless
    ``--no-unlabeled``), cut to ``--subset`` (a stratified sample in which the unlabeled images are one group)."""
    if images is None:
        read = dict(train=True, image_size=cfg.get("image_size"), unlabeled=cfg.get("unlabeled", True))
        if dist.rank() == 0:
            images, labels = load_dataset(cfg["data"], cfg["data_dir"], download=cfg["download"], **read)
        dist.barrier()  # the other ranks read what rank 0 may have just downloaded
        if dist.rank() != 0:
            images, labels = load_dataset(cfg["data"], cfg["data_dir"], **read)
    if cfg["subset"]:
        if labels is None or cfg["subset"] > len(images):
            raise UsageError(f"--subset {cfg['subset']} needs at most {len(images)} labelled images")
        index = stratified_subset(labels, cfg["subset"], cfg["subset_seed"])
        images, labels = images[index], labels[index]
    if cfg["batch_size"] > len(images):
        raise UsageError(f"--batch-size {cfg['batch_size']} is larger than the {len(images)} training images")
    return images, labels
