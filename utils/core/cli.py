"""Argument types and the one-line error exit shared by the entry scripts."""
import argparse
import os
import sys
from fractions import Fraction

from utils.core.errors import UsageError


def fraction(text: str) -> float:
    """A non-negative number written as ``8/255`` or ``0.0314``."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (write e.g. 8/255 or 0.0314)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def radius(text: str) -> float:
    """An L-inf radius or step in pixel units of [0, 1]: ``8/255`` or ``0.0314``, never above 1."""
    value = fraction(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is above 1: radii are in pixel units of [0, 1]; write e.g. 8/255")
    return value


def step_size(text: str):
    """An ascent step: a radius, or ``eps`` for the step equal to the radius (``--eps``), as free adversarial
    training's authors chose (Shafahi et al., 2019)."""
    return "eps" if text.strip() == "eps" else radius(text)


def unit_interval(text: str) -> float:
    """A number in [0, 1]."""
    value = fraction(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text!r} is above 1: choose a number in [0, 1]")
    return value


def decay_rate(text: str) -> float:
    """A moving average's decay: a number in [0, 1)."""
    value = fraction(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not below 1: choose a decay in [0, 1), e.g. 0.99")
    return value


def _bounded(kind, low, name):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
        return value

    parse.__name__ = name
    return parse


positive_int = _bounded(int, 1, "a positive integer")
nonneg_int = _bounded(int, 0, "a non-negative integer")
nonneg_float = _bounded(float, 0.0, "a non-negative number")


def positive_float(text):
    value = nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def eps_label(eps: float) -> str:
    """8/255 for 0.0313725..., the way the field writes epsilons."""
    f = Fraction(eps).limit_denominator(1000)
    if abs(float(f) - eps) > 1e-9:
        return f"{eps:g}"
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def _no_default(action) -> bool:
    # Identity, not equality: a default of 0 is worth showing, while 0 == False. A switch's default says nothing.
    return (action.default is None or action.default is False or action.default is argparse.SUPPRESS
            or (action.nargs == 0 and action.default is True))


class _HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action):
        text = action.help or ""
        if _no_default(action) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".strip()


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) and every default shown in --help."""

    def __init__(self, **kw):
        kw.setdefault("formatter_class", _HelpFormatter)
        super().__init__(**kw)

    def format_help(self):
        for action in self._actions:
            if action.help is None and not _no_default(action):
                action.help = "(default: %(default)s)"
        return super().format_help()

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class BoolFlag(argparse.Action):
    """``--flag`` / ``--no-flag``."""

    def __init__(self, option_strings, dest, **kw):
        opts = list(option_strings) + [s.replace("--", "--no-", 1) for s in option_strings]
        super().__init__(opts, dest, nargs=0, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no-"))


def default_data_dir():
    return os.environ.get("CFAMC_DATA_DIR")


_batch_in_use = None


def note_batch_size(batch_size: int) -> None:
    """Remembered so that an out-of-memory exit can name the batch size in use."""
    global _batch_in_use
    _batch_in_use = batch_size


def program_name() -> str:
    """How the user called the program, as its parser names it: 'main_empssl.py' or 'python -m utils.report'."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return f"python -m {spec.name}" if spec is not None and spec.name else os.path.basename(sys.argv[0])


def run_main(fn, *args, **kwargs):
    """Call ``fn``; turn the failures a user can fix into one line on stderr and a non-zero exit."""
    prog = program_name()
    try:
        return fn(*args, **kwargs)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        import torch

        if not isinstance(e, torch.cuda.OutOfMemoryError):
            raise
        hint = (f"the batch size in use is {_batch_in_use}: try --batch-size {max(1, _batch_in_use // 2)}"
                if _batch_in_use else "try a smaller --batch-size")
        print(f"{prog}: error: CUDA out of memory; {hint}", file=sys.stderr)
        sys.exit(3)


def flag_of(key: str) -> str:
    """A setting's flag: ``subset_train`` -> ``--subset-train``."""
    return "--" + key.replace("_", "-")


def to_argv(settings: dict) -> list:
    """The one builder of command lines from settings, in their order, each key its flag (``flag_of``): True is
    a bare switch, None and False leave the flag out, a tuple or list gives its values. ``{"eps": ("4/255",
    "8/255"), "no_train_augment": True, "subset_test": 2000}`` -> ``--eps 4/255 8/255 --no-train-augment
    --subset-test 2000``."""
    argv = []
    for key, value in settings.items():
        if value is None or value is False:
            continue
        argv.append(flag_of(key))
        if value is not True:
            argv += [str(v) for v in value] if isinstance(value, (tuple, list)) else [str(value)]
    return argv
