"""An encoder from a checkpoint: the project's own (its configuration read back through ``resolve_saved``) or
the original code's bare state dict (its sizes read off the shapes), with its weights or their moving average."""
from models import ARCHS
from utils.core.checkpoint import clean_state_dict, load_checkpoint_and_digest
from utils.core.errors import UsageError
from utils.engine.blocks import encoder_for
from utils.engine.config import resolve_saved
from utils.methods import METHODS


def _arch_from_state(state):
    layer1_blocks = len({k.split(".")[2] for k in state if k.startswith("backbone.layer1.")})
    return {2: "resnet18", 3: "resnet34"}.get(layer1_blocks, "resnet18")


def _original_code_config(path, state, method):
    """The config of a bare state dict (the original code's format), read off its shapes."""
    keys = ("backbone.conv1.weight", "pre_feature.0.weight", "projection.3.weight")
    if not all(k in state for k in keys):
        raise UsageError(f"{path} does not hold an encoder state dict (expected keys like {', '.join(keys)})")
    z_dim = state["projection.3.weight"].shape[0]
    owners = [name for name, cls in METHODS.items() if cls.z_dim == z_dim]
    if owners and method not in owners:
        raise UsageError(f"{path} has a {z_dim}-d projection, a {owners[0]} encoder; "
                         f"evaluate it with evaluate_{owners[0]}.py")
    stem = "imagenet" if state["backbone.conv1.weight"].shape[-1] == 7 else "cifar"
    size = 224 if stem == "imagenet" else 32  # the original code's ImageNet branch crops to 224, CIFAR's are 32
    return {"method": method, "arch": _arch_from_state(state), "width": state["backbone.conv1.weight"].shape[0],
            "hidden_dim": state["pre_feature.0.weight"].shape[0], "z_dim": z_dim, "preset": "crop", "stem": stem,
            "image_size": size, "view_size": size,
            "num_views": METHODS[method].views or METHODS[method].default_views}


def load_encoder(path, method: str, weights: str = "model"):
    """(encoder in eval mode with frozen parameters, metadata) from a project or original-code checkpoint, with its
    weights or (``weights="ema"``) their moving average; the metadata's ``sha1`` is the digest of the bytes the
    encoder was loaded from."""
    ckpt, sha1 = load_checkpoint_and_digest(path)
    if weights == "ema" and ckpt.get("ema") is None:
        raise UsageError(f"{path} holds no moving average of its weights: train with --ema-decay, or evaluate "
                         f"--weights model")
    state = clean_state_dict(ckpt["ema"]["weights"] if weights == "ema" else ckpt["model"])
    if "method" in ckpt and ckpt["method"] != method:
        raise UsageError(f"{path} is a {ckpt['method']} checkpoint ({ckpt['config'].get('script', '?')}.py); "
                         f"evaluate it with evaluate_{ckpt['method']}.py")
    if "method" not in ckpt:
        cfg = _original_code_config(path, state, method)
        ckpt = {"method": method, "regime": "unknown", "config": cfg, "train_seconds": None, "epoch": None}
    cfg = ckpt["config"] = resolve_saved(ckpt["config"])
    if cfg["arch"] not in ARCHS:
        raise UsageError(f"{path} uses architecture {cfg['arch']!r}, which this project does not build")
    encoder = encoder_for(method, cfg["arch"], cfg["width"], cfg["hidden_dim"], cfg["stem"], cfg["z_dim"])
    try:
        encoder.load_state_dict(state)
    except RuntimeError as e:
        raise UsageError(f"{path} does not match a {method} {cfg['arch']} encoder: {str(e).splitlines()[0]}") from None
    encoder.eval().requires_grad_(False)
    meta = {k: ckpt.get(k) for k in ("method", "regime", "config", "train_seconds", "epoch", "train_machines",
                                    "train_code")}
    return encoder, {**meta, "sha1": sha1}
