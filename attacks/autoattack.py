"""AutoAttack (Croce and Hein, 2020), version 'standard', through the authors' code (``pyautoattack``), with
the robust accuracy after each of its component attacks."""
import logging
import time
from contextlib import contextmanager

import torch

MISSING = "AutoAttack needs Croce and Hein's package: pip install pyautoattack"


def reference_autoattack():
    """The reference implementation's ``AutoAttack`` class and its success-rate check, imported only when an
    evaluation asks for AutoAttack (training needs no evaluation package); ``ImportError(MISSING)`` without it."""
    try:
        from pyautoattack import AutoAttack
        from pyautoattack.checks import check_square_sr
    except ImportError:
        raise ImportError(MISSING) from None
    return AutoAttack, check_square_sr


def autoattack_cascade(model, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int, batch_size: int, device,
                       report=None, attacks=None):
    """Standard L-inf AutoAttack of radius ``eps`` on ``model`` (images in [0, 1] -> logits, deterministic).

    x: (N, C, H, W) float in [0, 1], y: (N,) int64, on any device. ``run_standard_evaluation`` runs the
    components in order, each on the images still robust (classified correctly clean and not yet broken),
    but returns only the end result; here each component is one such call, with AutoAttack's own settings
    and seed, on the images the previous ones left robust: the same cascade, batch for batch.

    ``report(line)``, when given, hears of each component attack as it finishes. ``attacks``: run only these
    leading components (``("apgd-ce", "apgd-t")``: a screening upper bound on the full cascade's accuracy).
    Returns (robust (N,) bool on x's device, accuracy {"clean": %, "apgd-ce": %, ...} in attack order,
    seconds {attack: s}, AutoAttack's warnings as text lines).
    """
    AutoAttack, check_square_sr = reference_autoattack()
    adversary = AutoAttack(model, version="standard", norm="Linf", eps=eps, seed=seed, device=device)
    names = list(adversary.attacks_to_run)
    if attacks is not None:
        if list(attacks) != names[:len(attacks)]:
            raise ValueError(f"attacks must lead standard AutoAttack's {names}, got {list(attacks)}")
        names = list(attacks)
    with _warnings_of(adversary.logger) as notes:
        robust = _predictions(model, x, batch_size, device) == y
        accuracy, seconds = {"clean": _percent(robust)}, {}
        for name in names:
            started = time.monotonic()
            index = robust.nonzero().squeeze(1)
            if len(index):
                adversary.attacks_to_run = [name]
                _, predicted = adversary.run_standard_evaluation(x[index], y[index], batch_size=batch_size)
                robust[index] = predicted == y[index]
            accuracy[name], seconds[name] = _percent(robust), time.monotonic() - started
            if report is not None:  # the cascade's progress: each attack can take minutes
                report(f"{name} done on {len(index)} images, {accuracy[name]:.2f}% robust ({seconds[name]:.0f} s)")
        if attacks is None:  # the one check of the full run that needs every component's accuracy
            check_square_sr({k: v / 100 for k, v in accuracy.items()}, logger=adversary.logger)
    return robust, accuracy, seconds, list(dict.fromkeys(notes))


@torch.no_grad()
def _predictions(model, x, batch_size, device):
    return torch.cat([model(x[i: i + batch_size].to(device)).argmax(1).to(x.device)
                      for i in range(0, len(x), batch_size)])


def _percent(flags):
    return 100.0 * flags.sum().item() / max(len(flags), 1)


class _Collect(logging.Handler):
    def __init__(self, lines):
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record):
        self.lines.append(record.getMessage())


@contextmanager
def _warnings_of(logger: logging.Logger):
    """Collects the logger's warnings (a randomised or dynamic model, zero gradients, Square beating the
    gradient attacks: signs that the evaluation may be unreliable) so they are reported with the result;
    its progress messages, debug level, are not shown."""
    lines = []
    handler, propagate = _Collect(lines), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
