"""Weighted k-nearest-neighbour accuracy of frozen features: a cheap, label-using monitor of SSL training.

The classifier of InstDisc (Wu et al. 2018), as solo-learn uses it: cosine similarity between L2-normalised
features; the k most similar training features each vote for their class with weight exp(sim / T); the
prediction is the class with the largest summed weight.
"""
import sys
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from utils.core.data import load_dataset, stratified_subset
from utils.core.errors import UsageError


def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Weighted kNN predictions.

    train_feats (N, d), train_labels int64 (N,), test_feats (M, d), all on one device, any float dtype.
    Returns int64 (M,) on that device. Similarities are float32 even for bf16 features: bf16 keeps 8
    significant bits, 2-3 decimal digits, too few to rank neighbours whose cosines differ in the third
    decimal. Test rows go ``chunk`` at a time so the (chunk, N) similarity block bounds memory. ``k`` is
    clipped to N.
    """
    with torch.autocast(train_feats.device.type, enabled=False):  # the caller may run the features under autocast
        return _knn_predict(train_feats, train_labels, test_feats, num_classes, k, temperature, chunk)


def _knn_predict(train_feats, train_labels, test_feats, num_classes, k, temperature, chunk):
    train = F.normalize(train_feats.float(), dim=1)
    k = min(k, len(train))
    predictions = []
    for start in range(0, len(test_feats), chunk):
        test = F.normalize(test_feats[start: start + chunk].float(), dim=1)
        sims, neighbours = (test @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(test), num_classes, device=test.device)
        votes.scatter_add_(1, train_labels[neighbours], (sims / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, num_classes, k=20, temperature=0.07,
                 chunk=1024) -> float:
    """Percent of test rows whose weighted-kNN prediction (see ``knn_predict``) equals ``test_labels`` (M,)."""
    predictions = knn_predict(train_feats, train_labels, test_feats, num_classes, k, temperature, chunk)
    return (predictions == test_labels).float().mean().item() * 100


def _module_of(feature_fn) -> nn.Module:
    if isinstance(feature_fn, nn.Module):
        return feature_fn
    owner = getattr(feature_fn, "__self__", None)
    if isinstance(owner, nn.Module):
        return owner
    raise TypeError("pass model=: the monitor cannot tell which module a plain function runs, "
                    "and it must switch that module to eval mode")


class KNNMonitor:
    """kNN accuracy (%) of a fixed class-stratified subset of test images, with a fixed class-stratified
    subset of training images as the neighbours, for watching features improve during training."""

    def __init__(self, train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
                 test_labels: torch.Tensor, n_train: int = 10_000, n_test: int = 2_000, seed: int = 0,
                 batch_size: int = 500, k: int = 20, temperature: float = 0.07):
        """Images uint8 (N, 3, H, W) and labels int64 (N,), any device. The subsets (``n_train`` and
        ``n_test`` images, fewer if a split is smaller) are drawn here, once, with ``seed``."""
        train_index = stratified_subset(train_labels, min(n_train, len(train_labels)), seed).to(train_labels.device)
        test_index = stratified_subset(test_labels, min(n_test, len(test_labels)), seed).to(test_labels.device)
        self.train_images, self.train_labels = train_images[train_index], train_labels[train_index]
        self.test_images, self.test_labels = test_images[test_index], test_labels[test_index]
        self.num_classes = int(max(train_labels.max(), test_labels.max())) + 1
        self.batch_size, self.k, self.temperature = batch_size, k, temperature

    def monitor(self, feature_fn: Callable[[torch.Tensor], torch.Tensor], device,
                model: nn.Module | None = None) -> float:
        """``feature_fn``: images (B, 3, H, W) in [0, 1] -> features (B, d), e.g. ``encoder.features``
        (pre features). ``model``: the module it runs, switched to eval mode and back; found by itself
        when ``feature_fn`` is a module or one's bound method. Returns the kNN accuracy in percent.

        Training with and without the monitor stays identical: every submodule gets back its own mode (a
        frozen BatchNorm stays frozen), and the global RNG states are restored in case ``feature_fn`` draws.
        """
        device = torch.device(device)
        model = _module_of(feature_fn) if model is None else model
        self._move_to(device)
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                train_feats = self._features(feature_fn, self.train_images)
                test_feats = self._features(feature_fn, self.test_images)
        finally:
            for m, training in modes:
                m.training = training
        return knn_accuracy(train_feats, self.train_labels, test_feats, self.test_labels, self.num_classes, self.k,
                            self.temperature)

    def _move_to(self, device) -> None:
        # Kept there after the first call: the subsets are small next to the training set already on the device.
        for name in ("train_images", "train_labels", "test_images", "test_labels"):
            setattr(self, name, getattr(self, name).to(device))

    def _features(self, feature_fn, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([feature_fn(images[i: i + self.batch_size].float().div_(255))
                          for i in range(0, len(images), self.batch_size)])


def monitor_for(cfg: dict, images: torch.Tensor, labels) -> "KNNMonitor | None":
    """A training run's kNN monitor on its training ``images`` (uint8, on the device) and the test split of
    ``--data``; None when ``--knn-every 0`` or the data cannot support one (said on stderr)."""
    if not cfg["knn_every"] or labels is None:
        return None
    labelled = labels >= 0  # STL-10's unlabeled images have nothing to vote with
    images, labels = images[labelled.to(images.device)], labels[labelled]
    if len(labels.unique()) < 2:
        print("note: the training images carry fewer than 2 classes; no kNN monitor", file=sys.stderr)
        return None
    try:
        test_images, test_labels = load_dataset(cfg["data"], cfg["data_dir"], train=False, image_size=cfg["image_size"])
    except UsageError as e:
        print(f"note: no kNN monitor, the test images are not readable ({e})", file=sys.stderr)
        return None
    return KNNMonitor(images, labels, test_images, test_labels, cfg["knn_train"], cfg["knn_test"], cfg["seed"])
