import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from utils.core.data import load_dataset, stratified_subset
from utils.core.errors import UsageError


def write_batch(path, data, labels, key):
    with open(path, "wb") as fh:
        pickle.dump({b"data": data.reshape(len(data), -1), key: list(map(int, labels))}, fh)


def test_cifar10_pickled_layout(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8) for _ in range(6)]
    for i, b in enumerate(batches[:5]):
        write_batch(folder / f"data_batch_{i + 1}", b, [i] * 4, b"labels")
    write_batch(folder / "test_batch", batches[5], [9, 8, 7, 6], b"labels")
    x, y = load_dataset("cifar10", tmp_path, train=True)
    assert x.dtype == torch.uint8 and x.shape == (20, 3, 32, 32) and y.dtype == torch.int64
    assert torch.equal(x[4:8], torch.from_numpy(batches[1])) and y.tolist() == [i for i in range(5) for _ in range(4)]
    xt, yt = load_dataset("cifar10", folder, train=False)  # the batches folder itself works too
    assert torch.equal(xt, torch.from_numpy(batches[5])) and yt.tolist() == [9, 8, 7, 6]


def test_cifar100_pickled_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3, 32, 32)
    write_batch(folder / "train", data, [42, 99], b"fine_labels")
    x, y = load_dataset("cifar100", tmp_path, train=True)
    assert torch.equal(x, torch.from_numpy(data)) and y.tolist() == [42, 99]


def make_imagefolder(root, per_class=3, classes=("cat", "dog")):
    rng = np.random.default_rng(1)
    arrays = {}
    for split in ("train", "test"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i:04d}.png")
                arrays[split, c, i] = arr
    return arrays


def test_imagefolder_layout_and_cache(tmp_path):
    arrays = make_imagefolder(tmp_path)
    x, y = load_dataset("imagefolder", tmp_path, train=True)
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(x[4], torch.from_numpy(arrays["train", "dog", 1].transpose(2, 0, 1)))
    cache = tmp_path / ".train-uint8.npz"
    assert cache.is_file()
    x2, _ = load_dataset("imagefolder", tmp_path, train=True)
    assert torch.equal(x, x2)
    # A new file invalidates the cache.
    Image.fromarray(arrays["train", "cat", 0]).save(tmp_path / "train" / "dog" / "0009.png")
    x3, y3 = load_dataset("imagefolder", tmp_path, train=True)
    assert len(x3) == 7 and y3.tolist().count(1) == 4


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder"])
def test_missing_data_is_one_clear_error(tmp_path, name):
    with pytest.raises(UsageError, match=str(tmp_path)):
        load_dataset(name, tmp_path / "nowhere", train=True)


def test_empty_imagefolder_and_wrong_size_and_corrupt_files(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(UsageError, match="no image files"):
        load_dataset("imagefolder", tmp_path, train=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "train" / "cat" / "a.png")
    Image.fromarray(np.zeros((40, 32, 3), np.uint8)).save(tmp_path / "train" / "cat" / "big.png")
    with pytest.raises(UsageError, match=r"big.png is 32x40, .*a.png is 32x32; pass --image-size N"):
        load_dataset("imagefolder", tmp_path, train=True)
    (tmp_path / "train" / "cat" / "big.png").unlink()
    (tmp_path / "train" / "cat" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UsageError, match="bad.jpg"):
        load_dataset("imagefolder", tmp_path, train=True)


def test_real_cifar10_jpeg_copy(cifar10_jpeg):
    x, y = load_dataset("imagefolder", cifar10_jpeg, train=True)
    xt, yt = load_dataset("imagefolder", cifar10_jpeg, train=False)
    assert x.shape == (50000, 3, 32, 32) and xt.shape == (10000, 3, 32, 32)
    assert torch.bincount(y).tolist() == [5000] * 10 and torch.bincount(yt).tolist() == [1000] * 10


def test_stratified_subset_keeps_every_class_in_proportion_and_depends_on_the_seed():
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 195 + [3] * 5)  # sorted by class, as an image folder
    idx = stratified_subset(labels, 100, seed=0)
    assert idx.tolist() == sorted(set(idx.tolist())) and len(idx) == 100
    assert Counter(labels[idx].tolist()) == {0: 50, 1: 30, 2: 19, 3: 1}  # class 3's half share is raised to one
    assert Counter(labels[stratified_subset(labels, 4, seed=0)].tolist()) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert torch.equal(stratified_subset(labels, 100, seed=0), idx)
    assert not torch.equal(stratified_subset(labels, 100, seed=1), idx)


def test_stratified_subset_rounds_by_largest_remainder_and_refuses_too_many():
    labels = torch.tensor([0] * 3 + [1] * 3 + [2] * 4)
    assert Counter(labels[stratified_subset(labels, 5)].tolist()) == {0: 2, 1: 1, 2: 2}  # quotas 1.5, 1.5, 2
    assert torch.equal(stratified_subset(labels, 10), torch.arange(10))
    with pytest.raises(UsageError):
        stratified_subset(labels, 11)
