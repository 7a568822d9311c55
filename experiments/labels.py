"""The words that name a table row, from what a run's configuration says it trained.

A row's name is its preset and method, then every setting that differs from its script's defaults (the paper's
row): the regime's own words first, then the scale's sizes, then any other setting as its flag. The paper's name
for a row (``paper.ALIASES``) or the project's (``paper.OWN_ROWS``) is added only when the run has that row's
settings, apart from the scale's sizes and the seed.
"""
from pathlib import Path

from experiments.paper import ALIASES, OWN_ROWS
from models.resnet import default_stem
from utils.core.cli import eps_label
from utils.engine.config import RUN_LEVEL, parse_config, resolve_saved
from utils.methods import METHODS
from utils.regimes import REGIMES
from utils.studies.ablation import STYLE_PARTS

PART_WORDS = {"discard": "attack gradients discarded", "accumulate": "attack gradients summed",
              "restore": "statistics restored after the attack", "move": "statistics moved by the attack",
              "training": "attack on the training loss", "original": "the original attack target"}
# Sizes a scale sets: they name the row but leave it the paper's (or the project's) row at that scale.
SCALE_KEYS = ("epochs", "width", "hidden_dim", "subset", "seed")
# The data's sizes: like the data set itself, they name the row but leave it the paper's row on other images.
DATA_KEYS = ("image_size", "view_size", "stem", "unlabeled")
# Settings that do not change what is trained: where and how it ran, the monitor, diagnostics.
NOT_TRAINING = (*RUN_LEVEL, "method", "regime", "script", "data", "precision", "channels_last", "sync_bn",
                "attack_gain", "knn_every", "knn_train", "knn_test")


def regime_words(cfg: dict) -> list:
    """'m=3 free' or '5-step PGD', 'original', then the adversary's settings that differ from the defaults."""
    regime = cfg["regime"]
    if regime == "free":
        words = [f"m={cfg['replays']} free"]
    elif regime == "pgd":
        words = [f"{cfg['pgd_steps']}-step PGD", cfg["attack_style"]]
    elif regime == "distill":
        teacher = cfg.get("teacher_identity") or {}
        words = [f"distilled from a {teacher.get('regime', '?')} teacher of {teacher.get('epoch', '?')} epochs",
                 f"m={cfg['replays']} free"]
    else:
        words = [regime]
    method = METHODS.get(cfg["method"])
    if "eps" in cfg:
        words += [f"{cfg['clean_views']} clean views"] if method and cfg["clean_views"] != method.clean_views else []
        words += [f"clean branch x{cfg['clean_weight']:g}"] if cfg.get("clean_weight") else []
    words += ["clean views forwarded apart"] if cfg.get("clean_apart") else []
    words += ["invariance to the clean views"] if cfg.get("anchor") == "clean" else []
    if "attack_tcr_coef" in cfg and regime == "pgd" and cfg["attack_tcr_coef"] != cfg["tcr_coef"]:
        words.append(f"attack TCR weight {cfg['attack_tcr_coef']:g}")
    words += [f"eps {eps_label(cfg['eps'])}"] if "eps" in cfg and abs(cfg["eps"] - 8 / 255) > 1e-9 else []
    words += [f"step {eps_label(cfg['alpha'])}"] if "alpha" in cfg and abs(cfg["alpha"] - 0.01) > 1e-9 else []
    style = cfg.get("attack_style") == "original"
    words += [PART_WORDS[cfg[key]] for key, values in STYLE_PARTS.items() if key in cfg and cfg[key] != values[style]]
    return words + (["eval-mode BN attack"] if cfg.get("attack_bn") == "eval" else [])


# Settings the words above (and the name's other parts) already show.
SHOWN = ("num_views", "preset", "replays", "pgd_steps", "attack_style", "clean_views", "clean_weight", "clean_apart",
         "anchor", "attack_tcr_coef", "eps", "alpha", *STYLE_PARTS, "attack_bn", "per_view_forward", "batch_size",
         "teacher", "teacher_identity",
         *SCALE_KEYS, *DATA_KEYS)


def script_config(method: str, regime: str, flags=()) -> dict:
    """The resolved configuration of a script's run with ``flags`` added (its defaults: the paper's row)."""
    return parse_config(method, regime, None, list(flags))[0]


def run_config(r: dict) -> dict:
    """The resolved training configuration an evaluation result records (an older one's: filled as it trained)."""
    cfg = {"method": r.get("method"), "regime": r.get("regime"), **(r.get("train_config") or {})}
    return resolve_saved(cfg)


def differences(cfg: dict, ref: dict) -> list:
    """The training settings of ``cfg`` that differ from ``ref``'s, in ``cfg``'s order."""
    return [k for k in cfg if k not in NOT_TRAINING and k in ref and cfg[k] != ref[k]]


def size_words(cfg: dict, ref: dict) -> list:
    words = [f"{cfg['epochs']} epoch{'' if cfg['epochs'] == 1 else 's'}"]
    words += [f"width {cfg['width']}"] if cfg["width"] != 64 else []
    words += [f"hidden {cfg['hidden_dim']}"] if cfg["hidden_dim"] != ref["hidden_dim"] else []
    return words + ([f"{cfg['subset']} train images"] if cfg.get("subset") else [])


def data_words(cfg: dict) -> list:
    """'64px images', then the views' side and the stem where they are not what the image size implies."""
    words = [f"{cfg['image_size']}px images"] if cfg.get("image_size") not in (None, 32) else []
    view = cfg.get("view_size") or cfg.get("image_size")
    words += [f"{view}px views"] if view != (cfg.get("image_size") or view) else []
    words += [f"{cfg['stem']} stem"] if cfg.get("stem") not in (None, "auto", default_stem(view or 32)) else []
    return words + (["labelled images only"] if cfg.get("data") == "stl10" and not cfg.get("unlabeled") else [])


def other_words(cfg: dict, ref: dict, method_cls) -> list:
    words = []
    if cfg["per_view_forward"] != method_cls.per_view_forward:
        words.append("per-view BN" if cfg["per_view_forward"] else "joint BN")
    words += [f"batch {cfg['batch_size']}"] if cfg["batch_size"] != ref["batch_size"] else []
    words += [f"seed {cfg['seed']}"] if cfg["seed"] != ref["seed"] else []
    return words + [f"--{k.replace('_', '-')} {cfg[k]}" for k in differences(cfg, ref) if k not in SHOWN]


def alias(cfg: dict) -> str | None:
    """The paper's or the project's name for the row whose settings the run has (sizes and seed aside)."""
    key = (cfg["method"], cfg["preset"], cfg["regime"])
    candidates = [((), ALIASES[key])] if key in ALIASES else []
    candidates += [(row.flags, row.name) for row in OWN_ROWS if (row.method, row.preset, row.regime) == key]
    for flags, name in candidates:
        ref = script_config(cfg["method"], cfg["regime"], (*flags, "--preset", cfg["preset"]))
        if all(k in (*SCALE_KEYS, *DATA_KEYS) for k in differences(cfg, ref)):
            return name
    return None


def model_name(r: dict) -> str:
    """'Crop-based EMP-SSL (16 crops, m=3 free, 10 epochs) = CF-AMC-SSL', from the run's configuration."""
    cfg = run_config(r)
    method_cls = METHODS.get(cfg.get("method"))
    if method_cls is None or cfg["regime"] not in REGIMES:
        return f"{cfg.get('method')} ({cfg.get('regime')})"
    ref = script_config(cfg["method"], cfg["regime"])
    unit = "crops" if cfg["preset"] == "crop" else "patches"
    details = [f"{cfg['num_views']} {unit}", ", ".join(regime_words(cfg)), *size_words(cfg, ref), *data_words(cfg),
               *other_words(cfg, ref, method_cls)]
    name = f"{cfg['preset'].capitalize()}-based {method_cls.display} ({', '.join(details)})"
    known = alias(cfg)
    name += f" = {known}" if known else ""
    # The file evaluated, as the result's file name has it: a run directory given as the checkpoint is its last.pt.
    stem = Path((r.get("checkpoint_identity") or {}).get("file") or r.get("checkpoint", "last.pt")).stem
    return name if stem in ("last", "") else f"{name} [{stem}]"
