"""The three fine-tuning protocols of the robust-SSL benchmark (RobustSSL, as used by AdvCL, DynACL, DeACL).

``slf``: linear head on clean features of the frozen encoder; ``alf``: the same head trained on PGD examples
crafted through encoder + head; ``aff``: encoder and head trained together with TRADES. All three: SGD with
momentum, step decay by 10 at the milestones (per epoch), training images padded-cropped and flipped.
``PROTOCOLS`` maps each name to its trainer and its benchmark defaults.
"""
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from attacks import pgd_linf, trades_adversary, trades_loss


def crop_flip_params(batch_size: int, pad: int = 4, generator=None):
    """RandomCrop(padding=pad) + RandomHorizontalFlip draws for a batch: (top, left) offsets into the padded
    image, uniform in 0..2*pad, and flip flags with probability 1/2; three (B,) CPU tensors."""
    top, left = torch.randint(0, 2 * pad + 1, (2, batch_size), generator=generator)
    flip = torch.rand(batch_size, generator=generator) < 0.5
    return top, left, flip


def crop_flip(x: torch.Tensor, top, left, flip, pad: int = 4) -> torch.Tensor:
    """x: (B, C, H, W), any dtype -> (B, C, H, W): image i zero-padded by ``pad``, the H x W window at
    (top[i], left[i]) of the padded image, mirrored left-right where flip[i]. One gather for the batch."""
    b, c, h, w = x.shape
    top, left, flip = (t.to(x.device) for t in (top, left, flip))
    rows = top.view(b, 1) + torch.arange(h, device=x.device)
    cols = left.view(b, 1) + torch.arange(w, device=x.device)
    cols = torch.where(flip.view(b, 1), cols.flip(1), cols)
    padded = F.pad(x, (pad, pad, pad, pad))
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, channel, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def linear_head(in_features: int, num_classes: int) -> nn.Linear:
    """The linear head, weights and bias at zero: where the benchmark's fine-tuning starts."""
    head = nn.Linear(in_features, num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class Classifier(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> logits (B, K): a linear head on the encoder's ``feature_kind`` output.

    With ``augment`` and ``views`` (the ``ViewParams`` of one image, drawn once), the features are averaged
    over those views, cut identically from every image: one fixed function of the image in any batch, so an
    attack (AutoAttack on any sub-batch included) attacks exactly the classifier that is measured."""

    def __init__(self, encoder, head, feature_kind: str, augment=None, views=None):
        super().__init__()
        self.encoder, self.head, self.feature_kind = encoder, head, feature_kind
        self.augment, self.views = augment, views

    def features(self, x):
        if self.augment is None:
            return self.encoder.features(x, self.feature_kind)
        views = self.augment.apply(x, self.views.repeat_images(len(x)))
        return self.encoder.features(views, self.feature_kind).view(len(self.views), len(x), -1).mean(0)

    def forward(self, x):
        return self.head(self.features(x))

    def trunk(self) -> list:
        """The encoder modules that the features pass through (what full fine-tuning trains)."""
        return [self.encoder.backbone] + ([self.encoder.pre_feature] if self.feature_kind == "pre" else [])


@torch.no_grad()
def extract_features(model: Classifier, images, batch_size: int, device) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> features (N, D) on the device, in order."""
    return torch.cat([model.features(images[i: i + batch_size].to(device).float().div_(255))
                      for i in range(0, len(images), batch_size)])


class Minibatches:
    """Shuffled minibatches (x, y) of ``data`` (N, ...) and ``labels`` (N,), held on the device; each iteration
    is one pass. ``prepare(x, generator)`` turns a raw batch into the model's input. One seeded CPU generator
    draws the order and whatever ``prepare`` draws, so fine-tuning is reproducible from the seed."""

    def __init__(self, data, labels, batch_size: int, seed: int, device, prepare=None):
        self.data, self.labels = data.to(device), labels.to(device)
        self.batch_size, self.prepare = batch_size, prepare
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator).to(self.data.device)
        for i in range(0, n, self.batch_size):
            idx = order[i: i + self.batch_size]
            if len(idx) == 1 < self.batch_size:  # a trailing batch of one: BatchNorm cannot train on it (aff)
                continue
            x = self.data[idx]
            yield (x if self.prepare is None else self.prepare(x, self.generator)), self.labels[idx]


def image_batches(images, labels, args, device) -> Minibatches:
    """The uint8 training images as [0, 1] float minibatches, padded-cropped and flipped unless
    ``--no-train-augment``."""
    def prepare(x, generator):
        if args.train_augment:
            x = crop_flip(x, *crop_flip_params(len(x), generator=generator))
        return x.float().div_(255)

    return Minibatches(images, labels, args.finetune_batch_size, args.seed, device, prepare)


def sgd_epochs(params, batches, args, step_loss: Callable, desc: str) -> None:
    """SGD (momentum, weight decay) over ``args.finetune_epochs`` passes of ``batches``; ``step_loss(x, y)``
    gives each minibatch's loss; the learning rate drops by 10 at each of ``args.milestones`` epochs."""
    opt = torch.optim.SGD(params, lr=args.finetune_lr, momentum=args.momentum, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=args.milestones, gamma=0.1)
    for _ in tqdm(range(args.finetune_epochs), desc=desc, leave=False, disable=None):
        for x, y in batches:
            loss = step_loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()


def fit_slf(model: Classifier, images, labels, args, device) -> None:
    """Standard linear fine-tuning: the head on clean features of the frozen encoder (eval mode). Without
    augmentation the features never change, so they are computed once."""
    if args.train_augment:
        batches, features = image_batches(images, labels, args, device), model.features
    else:
        feats = extract_features(model, images, args.batch_size, device)
        batches, features = Minibatches(feats, labels, args.finetune_batch_size, args.seed, device), nn.Identity()
    sgd_epochs(model.head.parameters(), batches, args, lambda x, y: F.cross_entropy(model.head(features(x)), y), "slf")


def fit_alf(model: Classifier, images, labels, args, device) -> None:
    """Adversarial linear fine-tuning: per minibatch, PGD on the cross-entropy (random start) through the
    frozen encoder (eval mode) and the current head, then a head step on the adversarial images."""
    def step_loss(x, y):
        x_adv = pgd_linf(lambda xa: F.cross_entropy(model(xa), y, reduction="sum"), x, args.train_eps,
                         args.train_step_size, args.train_steps)
        return F.cross_entropy(model(x_adv), y)

    sgd_epochs(model.head.parameters(), image_batches(images, labels, args, device), args, step_loss, "alf")


def fit_aff(model: Classifier, images, labels, args, device) -> None:
    """Adversarial full fine-tuning with TRADES: the encoder up to the features (``trunk``) and the head train
    together. BatchNorm normalises with running statistics while the adversary crafts (as TRADES does) and
    with batch statistics for the step."""
    params = [p for m in model.trunk() + [model.head] for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)

    def step_loss(x, y):
        model.eval()
        x_adv = trades_adversary(model, x, args.train_eps, args.train_step_size, args.train_steps)
        model.train()
        return trades_loss(model(x), model(x_adv), y, args.trades_beta)

    sgd_epochs(params, image_batches(images, labels, args, device), args, step_loss, "aff")
    model.eval()


@dataclass(frozen=True)
class Protocol:
    fit: Callable
    lr: float
    batch_size: int
    milestones: tuple
    description: str
    lr_by_data: tuple = ()  # (dataset, learning rate) pairs where the benchmark uses another rate

    def lr_for(self, data: str) -> float:
        return dict(self.lr_by_data).get(data, self.lr)


# The benchmark's settings; every one can be overridden by a flag.
PROTOCOLS = {
    "slf": Protocol(fit_slf, 0.01, 512, (10, 20), "standard linear fine-tuning", (("cifar100", 0.05),)),
    "alf": Protocol(fit_alf, 0.01, 512, (10, 20), "adversarial linear fine-tuning", (("cifar100", 0.05),)),
    "aff": Protocol(fit_aff, 0.1, 128, (15, 20), "adversarial full fine-tuning (TRADES)"),
}
