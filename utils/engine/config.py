"""Flags -> one resolved configuration of a training run.

Every key a run reads is present once ``parse_config`` returns: the script's defaults (its row of the paper's
table), then the flags, then the settings whose default is another setting's value (``complete``). A checkpoint's
configuration from an older version is mapped once, when it is read (``resolve_saved``).
"""
import argparse
import sys

from augment import PRESETS
from models import ARCHS, STEMS
from utils.core.cli import (
    BoolFlag,
    Parser,
    decay_rate,
    default_data_dir,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    unit_interval,
)
from utils.core.data import DATASETS
from utils.core.errors import UsageError
from utils.methods import METHODS
from utils.regimes import REGIMES
from utils.studies import ablation

# (method, regime) -> (entry script, its defaults): the paper's rows, one script each.
SCRIPTS = {
    ("simclr", "standard"): ("main_simclr", {"epochs": 500, "batch_size": 512}),
    ("simclr", "pgd"): ("main_simclr_adv", {"epochs": 500, "batch_size": 512, "attack_style": "original"}),
    ("simclr", "free"): ("main_simclr_free_adv", {"epochs": 167, "batch_size": 512}),
    ("empssl", "standard"): ("main_empssl", {"epochs": 30, "batch_size": 100, "num_views": 16}),
    ("empssl", "pgd"): ("main_empssl_adv", {"epochs": 30, "batch_size": 100, "num_views": 16,
                                            "attack_style": "original"}),
    ("empssl", "free"): ("main_empssl_free_adv", {"epochs": 10, "batch_size": 100, "num_views": 16}),
}
# The project's own scripts beside the paper's: the distilled multi-crop student, at CF-AMC-SSL's settings.
OWN_SCRIPTS = {
    ("empssl", "distill"): ("main_empssl_distill", {"epochs": 10, "batch_size": 100, "num_views": 16}),
}
# Settings added after runs were saved without them -> the value those runs trained with: per regime, and for
# every run (all trained on 32x32 images, cut into 32x32 views, with the CIFAR stem).
LEGACY = {"pgd": {"attack_style": "isolated"}}
LEGACY_ALL = {"image_size": 32, "view_size": 32, "stem": "cifar"}
# Settings a resumed run may change: where and how it runs, not what it computes (--teacher is where the teacher
# lies; its bytes are checked against the run's record of them).
RUN_LEVEL = ("device", "log_every", "out_dir", "checkpoint_minutes", "compile", "resume", "data_dir", "download",
             "save_every", "knn_every", "knn_train", "knn_test", "time_limit", "progress_seconds", "teacher")
# Settings of this invocation alone: a resumed run never inherits them from its checkpoint.
THIS_CALL = ("out_dir", "resume", "time_limit")
# Settings in pixel units of [0, 1], written as 8/255.
RADII = ("eps", "alpha")
# Exit status of a run stopped by --time-limit (sysexits' EX_TEMPFAIL: run the same command again to go on).
TIME_LIMIT_EXIT = 75


def entry_scripts() -> dict:
    """(method, regime) -> (entry script, its defaults) for every script of a registered method and regime."""
    return {key: row for key, row in SCRIPTS.items() if key[0] in METHODS and key[1] in REGIMES}


def script_of(method: str, regime: str):
    """(entry script name, its defaults): the script's row, or a generic name and no defaults."""
    return SCRIPTS.get((method, regime)) or OWN_SCRIPTS.get((method, regime), (f"train_{method}_{regime}", {}))


def build_parser(method: str, regime: str, defaults: dict) -> Parser:
    method_cls, regime_cls = METHODS.lookup(method), REGIMES.lookup(regime)
    script = script_of(method, regime)[0]
    p = Parser(prog=f"{script}.py", allow_abbrev=False,
               description=f"Train a ResNet encoder with {method_cls.display} ({regime_cls.display}).")
    _data_flags(p.add_argument_group("data"))
    _optimisation_flags(p.add_argument_group("optimisation"))
    _view_flags(p.add_argument_group("views"), method_cls)
    g = p.add_argument_group("model and objective")
    g.add_argument("--arch", choices=sorted(ARCHS), default="resnet18")
    g.add_argument("--width", type=positive_int, default=64, help="base channels (64 = ResNet-18)")
    g.add_argument("--hidden-dim", type=positive_int, default=4096, help="projector hidden size")
    g.add_argument("--z-dim", type=positive_int, default=None,
                   help=f"embedding size, the projector's output (default: {method_cls.display}'s, {method_cls.z_dim})")
    g.add_argument("--stem", choices=("auto", *STEMS), default="auto",
                   help="cifar: 3x3 stride-1 convolution; imagenet: 7x7 stride 2 + max-pool (auto: cifar up to 64x64 "
                        "views, imagenet above)")
    method_cls.add_flags(g)
    regime_cls.add_flags(p.add_argument_group(regime_cls.display))
    _run_flags(p.add_argument_group("run"), script)
    g = p.add_argument_group("monitor (labels are used here only, never for training)")
    g.add_argument("--knn-every", type=nonneg_int, default=1,
                   help="weighted kNN accuracy of the pre-features every N epochs (0: off)")
    g.add_argument("--knn-train", type=positive_int, default=10_000, help="training images the kNN searches")
    g.add_argument("--knn-test", type=positive_int, default=2_000, help="test images the kNN classifies")
    ablation.add_flags(p.add_argument_group(ablation.TITLE, ablation.DESCRIPTION), method, regime)
    for action in p._actions:  # the script's defaults for its row of the paper's table, whichever group holds them
        action.default = defaults.get(action.dest, action.default)
    return p


def _data_flags(g):
    g.add_argument("--data", choices=DATASETS, default="cifar10", help="dataset layout")
    g.add_argument("--data-dir", default=default_data_dir() or "data",
                   help="dataset root (default: $CFAMC_DATA_DIR or ./data)")
    g.add_argument("--download", action="store_true", help="download CIFAR-10/100 or STL-10 into --data-dir if missing")
    g.add_argument("--image-size", type=positive_int, default=None,
                   help="resize every image to NxN once, when the data is read (default: as stored: CIFAR 32, "
                        "STL-10 96)")
    g.add_argument("--unlabeled", action=BoolFlag, default=True,
                   help="STL-10: train on its 100,000 unlabeled images too, after the 5,000 labelled ones")
    g.add_argument("--subset", type=positive_int, default=None,
                   help="train on N images, a class-stratified sample fixed by the data and --subset-seed")
    g.add_argument("--subset-seed", type=int, default=0, help="which stratified sample --subset takes")


def _optimisation_flags(g):
    g.add_argument("--epochs", type=positive_int, default=10)
    g.add_argument("--batch-size", type=positive_int, default=256, help="images per step (global)")
    g.add_argument("--lr", type=nonneg_float, default=0.3, help="base learning rate (cosine to 0)")
    g.add_argument("--momentum", type=nonneg_float, default=0.9)
    g.add_argument("--weight-decay", type=nonneg_float, default=1e-4)
    g.add_argument("--lars-eta", type=positive_float, default=0.005, help="LARS trust coefficient")
    g.add_argument("--ema-decay", type=decay_rate, default=0.0,
                   help="also keep an exponential moving average of the encoder's weights with this decay, in every "
                        "checkpoint, for evaluate_*.py --weights ema (0: none)")


def _view_flags(g, method_cls):
    if method_cls.views is None:
        g.add_argument("--num-views", type=positive_int, default=method_cls.default_views, help="views per image")
    g.add_argument("--per-view-forward", action=BoolFlag, default=method_cls.per_view_forward,
                   help="forward each view on its own (BatchNorm statistics per view) rather than all views at once")
    g.add_argument("--preset", choices=sorted(PRESETS), default="crop",
                   help="crop: scale (0.08, 1), ratio (3/4, 4/3); patch: squares of a quarter of the image's area "
                        "(16x16 of 32x32); both fractions of the image")
    g.add_argument("--view-size", type=positive_int, default=None,
                   help="side of the views the encoder sees, each crop resized to it (default: the image size)")
    g.add_argument("--scale-min", type=positive_float, default=None, help="override the preset's crop scale")
    g.add_argument("--scale-max", type=positive_float, default=None)
    g.add_argument("--ratio-min", type=positive_float, default=None, help="override the preset's aspect ratio")
    g.add_argument("--ratio-max", type=positive_float, default=None)
    g.add_argument("--weak-views", type=nonneg_int, default=0,
                   help="cut the last N views of each image weak: near-full crops (75-100%% of the area), flipped or "
                        "not, with no colour operation; an adversary perturbs them with the others it perturbs")
    g.add_argument("--view-strength-end", type=unit_interval, default=1.0,
                   help="anneal the other views' augmentation from full strength at the first optimizer step to this "
                        "at the last (DynACL): every probability and jitter magnitude times the strength, the crop's "
                        "area fractions toward the whole image (1: no annealing; 0: whole images, flipped or not)")


def _run_flags(g, script):
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU; losses are always float32")
    g.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="channels-last memory format (auto: on CUDA; on the CPU whichever a probe of the encoder "
                        "measures faster, chosen once when the run starts)")
    g.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    g.add_argument("--sync-bn", action=BoolFlag, default=True, help="synchronise BatchNorm across ranks (DDP, CUDA)")
    g.add_argument("--out-dir", default=None, help=f"run directory (default: runs/{script}/<timestamp>)")
    g.add_argument("--save-every", type=nonneg_int, default=0,
                   help="also keep epoch_NNNN.pt every N epochs (0: only last.pt)")
    g.add_argument("--checkpoint-minutes", type=nonneg_float, default=10.0,
                   help="rewrite last.pt mid-epoch this often (0: only at epoch ends)")
    g.add_argument("--resume", default=None,
                   help="run directory or checkpoint to continue; 'auto' = last.pt of --out-dir or the newest run")
    g.add_argument("--log-every", type=positive_int, default=None,
                   help="read losses back to the host every N steps (default: 1 on CPU, 50 on CUDA)")
    g.add_argument("--progress-seconds", type=positive_float, default=60.0,
                   help="where output goes to a file or pipe, a progress line (step, loss, images/s, the run's ETA) "
                        "this often")
    g.add_argument("--time-limit", type=positive_float, default=None,
                   help=f"seconds this process may run: past them, at the next read-back point, save last.pt and "
                        f"exit with status {TIME_LIMIT_EXIT} (resume with --resume)")


def parse_config(method, regime, defaults=None, argv=None):
    """(config dict, the flags given explicitly, parser) for ``argv``; ``defaults`` default to the script's
    (``{}``: none, the generic run of a method and regime)."""
    defaults = script_of(method, regime)[1] if defaults is None else defaults
    parser = build_parser(method, regime, defaults)
    argv = sys.argv[1:] if argv is None else argv
    cfg = vars(parser.parse_args(argv))
    explicit = build_parser(method, regime, defaults)
    for action in explicit._actions:
        action.default = argparse.SUPPRESS
    given = set(vars(explicit.parse_args(argv)))
    cfg.update(method=method, regime=regime, script=script_of(method, regime)[0])
    _check_views(parser, cfg)
    return complete(cfg), given, parser


def complete(cfg: dict) -> dict:
    """``cfg`` with every setting whose default is another's filled in: the views of a method with a fixed
    number, the views an adversary leaves clean (the method's), and the ablations' own."""
    method = METHODS.lookup(cfg["method"])
    cfg.setdefault("num_views", method.views)
    if cfg.get("z_dim") is None:
        cfg["z_dim"] = method.z_dim
    if cfg.get("clean_views") is None:
        cfg["clean_views"] = method.clean_views
    if cfg.get("alpha") == "eps":
        cfg["alpha"] = cfg["eps"]
    if cfg["weak_views"] > cfg["num_views"]:
        raise UsageError(f"--weak-views {cfg['weak_views']} is more than the {cfg['num_views']} views; choose at most "
                         f"{cfg['num_views']}")
    if cfg["clean_views"] >= cfg["num_views"]:
        raise UsageError(f"--clean-views {cfg['clean_views']} leaves no view of the {cfg['num_views']} to perturb; "
                         f"choose at most {cfg['num_views'] - 1}")
    ablation.complete(cfg)
    return cfg


def resolve_saved(saved: dict) -> dict:
    """A checkpoint's configuration with every key of today's: settings added since it was saved take the value
    it trained with (``LEGACY``), else their default, so that it resumes and evaluates as it trained."""
    method, regime = saved.get("method"), saved.get("regime")
    if method not in METHODS or regime not in REGIMES:  # the original code's state dicts: no run of ours
        return saved
    parser = build_parser(method, regime, script_of(method, regime)[1])
    defaults = {a.dest: a.default for a in parser._actions if a.dest != "help"}
    return complete({**defaults, **LEGACY_ALL, **LEGACY.get(regime, {}), **saved})


def _check_views(parser, cfg):
    for lo, hi in (("scale_min", "scale_max"), ("ratio_min", "ratio_max")):
        flags = f"--{lo.replace('_', '-')} and --{hi.replace('_', '-')}"
        if (cfg[lo] is None) != (cfg[hi] is None):
            parser.error(f"{flags} go together")
        if cfg[lo] is not None and cfg[lo] > cfg[hi]:
            parser.error(f"{flags}: the first must not exceed the second")
    if cfg["scale_max"] is not None and cfg["scale_max"] > 1:
        parser.error("--scale-max must be at most 1 (a fraction of the image area)")
    if cfg.get("num_views", 2) < 2:
        parser.error("--num-views must be at least 2 (the objective compares views)")
