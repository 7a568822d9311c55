"""The evaluation engine behind ``evaluate_simclr.py`` and ``evaluate_empssl.py``.

Fit a classifier on the training images with one of the robust-SSL benchmark's protocols (``--protocol
slf|alf|aff``, see ``utils.evaluation.protocols``), then measure on the test images, in order: clean accuracy, accuracy
under L-inf PGD-20 (step eps/4, random start, cross-entropy, end to end from the image) at each ``--eps``, and
with ``--autoattack`` AutoAttack (standard) with the accuracy after each of its attacks. An image counts as
robust only when it is classified correctly both clean and under attack. Each evaluation writes
``eval-{protocol}-{features}-v{views}-{checkpoint stem}.json`` and the fitted head (for ``aff``, the network)
as the ``.pt`` of the same name.
"""
import hashlib
import itertools
import json
import re
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from attacks import autoattack_cascade, pgd_linf, reference_autoattack
from utils.core.checkpoint import checkpoint_file, save_checkpoint
from utils.core.cli import (
    Parser,
    default_data_dir,
    eps_label,
    nonneg_float,
    nonneg_int,
    note_batch_size,
    positive_float,
    positive_int,
    radius,
    run_main,
)
from utils.core.data import DATASETS, load_dataset, stratified_subset
from utils.core.errors import UsageError
from utils.core.files import folder_lock, machine, make_dir, plain, resolve_device, write_json
from utils.core.version import code_version
from utils.engine.blocks import run_augment
from utils.engine.encoders import load_encoder
from utils.engine.layout import FORMATS, choose_layout, layout_seconds
from utils.evaluation.progress import Progress
from utils.evaluation.protocols import PROTOCOLS, Classifier, linear_head
from utils.evaluation.results import result_name
from utils.methods import METHODS

SWEEP = [k / 255 for k in (0, 1, 2, 4, 8, 16)]
SCREEN = ("apgd-ce", "apgd-t")  # the components of standard AutoAttack that --screen runs
# Settings added after results were written without them -> the value those results were measured with.
LEGACY_SETTINGS = {"weights": "model", "screen": False}


def build_parser(method: str) -> Parser:
    p = Parser(prog=f"evaluate_{method}.py",
               description=f"Evaluate an encoder trained with {METHODS.lookup(method).display}: fine-tune a classifier "
                           "(slf, alf or aff), then measure its clean, PGD and AutoAttack accuracy.")
    _data_flags(p.add_argument_group("data"))
    _finetune_flags(p.add_argument_group("fine-tuning"))
    _test_flags(p.add_argument_group("test"), method)
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=positive_int, default=500, help="images per test / feature batch")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g.add_argument("--seed", type=int, default=0, help="fine-tuning, attacks' random starts and the test views")
    g.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="the network's memory layout (auto: on CUDA; on the CPU whichever a probe of the attack's "
                        "pass measures faster); the same evaluation either way, up to float rounding")
    g.add_argument("--out", default=None, help="directory for the result files (default: the checkpoint's)")
    return p


def _data_flags(g):
    g.add_argument("--checkpoint", required=True, help="a .pt written by a training script (or its run directory)")
    g.add_argument("--weights", choices=("model", "ema"), default="model",
                   help="model: the encoder's weights; ema: their moving average (a run trained with --ema-decay)")
    g.add_argument("--data", choices=DATASETS, default=None, help="dataset (default: the one the encoder trained on)")
    g.add_argument("--data-dir", default=None,
                   help="dataset root (default: the training run's, $CFAMC_DATA_DIR, ./data)")
    g.add_argument("--download", action="store_true")
    g.add_argument("--image-size", type=positive_int, default=None,
                   help="resize the images to NxN once, when read (default: the size the encoder trained at)")
    g.add_argument("--subset-train", type=positive_int, default=None,
                   help="fine-tune on N training images, a class-stratified sample fixed by the data and --subset-seed")
    g.add_argument("--subset-test", type=positive_int, default=None, help="test on N images, stratified likewise")
    g.add_argument("--subset-seed", type=int, default=0, help="which stratified samples the subsets take")


def _finetune_flags(g):
    g.add_argument("--protocol", choices=sorted(PROTOCOLS), default="slf",
                   help="; ".join(f"{k}: {v.description}" for k, v in PROTOCOLS.items()))
    g.add_argument("--features", choices=("pre", "backbone"), default="pre",
                   help="pre: the pre_feature output (hidden-dim); backbone: the pooled ResNet output "
                        "(the benchmark's)")
    g.add_argument("--finetune-epochs", type=positive_int, default=25)
    g.add_argument("--finetune-lr", type=positive_float, default=None,
                   help="SGD learning rate (default: slf/alf 0.01, on cifar100 0.05; aff 0.1)")
    g.add_argument("--finetune-batch-size", type=positive_int, default=None, help="(default: slf/alf 512, aff 128)")
    g.add_argument("--momentum", type=nonneg_float, default=0.9)
    g.add_argument("--weight-decay", type=nonneg_float, default=2e-4)
    g.add_argument("--milestones", type=nonneg_int, nargs="+", default=None,
                   help="epochs at which the learning rate drops by 10 (default: slf/alf 10 20, aff 15 20)")
    g.add_argument("--train-eps", type=radius, default=8 / 255, help="alf/aff adversary's radius (default: 8/255)")
    g.add_argument("--train-steps", type=nonneg_int, default=10, help="alf/aff adversary's PGD steps")
    g.add_argument("--train-step-size", type=radius, default=2 / 255, help="alf/aff adversary's step (default: 2/255)")
    g.add_argument("--trades-beta", type=nonneg_float, default=6.0, help="aff: weight of TRADES' KL term")
    g.add_argument("--no-train-augment", dest="train_augment", action="store_false",
                   help="fine-tune on the plain images (default: random crop with 4-pixel padding and flip)")


def _test_flags(g, method):
    g.add_argument("--eps", type=radius, nargs="+", default=[4 / 255, 8 / 255],
                   help="test radii (default: 4/255 8/255)")
    g.add_argument("--eps-sweep", action="store_true", help="also PGD at 0, 1, 2, 4, 8, 16 /255")
    g.add_argument("--pgd-steps", type=nonneg_int, default=20)
    g.add_argument("--pgd-step-size", type=radius, default=None, help="PGD step (default: eps/4)")
    g.add_argument("--no-random-start", dest="random_start", action="store_false", help="start PGD at the image")
    g.add_argument("--test-views", type=positive_int, default=1,
                   help="average the features of N views, drawn once from --seed and cut alike from every image")
    attack = g.add_mutually_exclusive_group()
    attack.add_argument("--autoattack", action="store_true", help="also run AutoAttack (standard, L-inf) at each --eps")
    attack.add_argument("--screen", action="store_true",
                        help="also run AutoAttack's first two attacks (APGD-CE, APGD-T, at its standard settings) at "
                             "each --eps: an upper bound on AutoAttack's accuracy for screening candidates, written to "
                             "its own result file (...-screen.json) as 'screen', never as 'autoattack'")
    g.add_argument("--autoattack-samples", type=positive_int, default=None,
                   help="AutoAttack a stratified sample of N test images (default: all)")


def parse_args(method: str, argv, data=None):
    """Flags with the chosen protocol's defaults filled in for ``data`` (default: --data, else cifar10)."""
    args = build_parser(method).parse_args(argv)
    return fill_protocol_defaults(args, data or args.data or "cifar10")


def fill_protocol_defaults(args, data: str):
    """The protocol's benchmark settings where no flag gave them, the learning rate the benchmark's for ``data``;
    given milestones past the fine-tuning epochs, which never fire, are said."""
    protocol = PROTOCOLS[args.protocol]
    given = args.milestones is not None
    for name, value in (("finetune_lr", protocol.lr_for(data)), ("finetune_batch_size", protocol.batch_size),
                        ("milestones", list(protocol.milestones))):
        if getattr(args, name) is None:
            setattr(args, name, value)
    late = [m for m in args.milestones if m >= args.finetune_epochs]
    if late and given:
        print(f"note: --milestones {' '.join(map(str, late))} lie past the {args.finetune_epochs} fine-tuning epochs: "
              f"the learning rate does not drop there", file=sys.stderr)
    return args


def dataset_of(args, cfg) -> str:
    """The dataset evaluated on: --data, else the one the encoder trained on."""
    return args.data or cfg.get("data", "cifar10")


def index_digest(index: torch.Tensor) -> str:
    """A short fingerprint of an index list, to tell in a result file which sample was used."""
    return hashlib.sha1(index.to(torch.int64).numpy().tobytes()).hexdigest()[:12]


def _sample(labels, n, seed, flag):
    """(indices into labels, record) of a stratified sample of n, or (None, None) without n."""
    if n is None:
        return None, None
    if n > len(labels):
        raise UsageError(f"{flag} {n} is more than the {len(labels)} images there are; choose at most {len(labels)}")
    index = stratified_subset(labels, n, seed)
    return index, {"n": n, "seed": seed, "sha1": index_digest(index)}


class Data(NamedTuple):
    train_x: torch.Tensor  # uint8 (N, 3, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    autoattack_index: Optional[torch.Tensor]  # into test_x; None: all of it
    subsets: dict  # the record of each sample taken
    source: dict  # what the data set is: its name, folder, sizes, classes and a fingerprint of its test images


def describe_data(name, root, train_y, test_x, test_y) -> dict:
    """The record that names a result's data set: two folders of the same name with other images differ in it."""
    digest = hashlib.sha1(test_x.numpy().tobytes())
    digest.update(test_y.to(torch.int64).numpy().tobytes())
    return {"name": name, "folder": Path(root).name, "image_size": int(test_x.shape[-1]), "train_images": len(train_y),
            "test_images": len(test_y), "classes": int(torch.unique(test_y).numel()),
            "test_sha1": digest.hexdigest()[:12]}


def data_root(args, cfg) -> str:
    return args.data_dir or cfg.get("data_dir") or default_data_dir() or "data"


def image_size_of(args, cfg) -> int:
    """The side the evaluation images are read at: --image-size, else the one the encoder trained at."""
    return args.image_size or cfg["image_size"]


def trained_on(cfg) -> dict:
    """The data set a checkpoint's encoder trained on, as its configuration records it."""
    return {"name": cfg.get("data", "cifar10"), "folder": Path(cfg.get("data_dir") or "data").name,
            "image_size": cfg["image_size"]}


def transfer_suffix(args, cfg) -> str:
    """'' where the evaluation reads the data the encoder trained on, at its size; else '-on-NAME-SIZEpx' (an image
    folder by its folder's name), so that a transfer evaluation has a result file of its own."""
    name, root, size = dataset_of(args, cfg), data_root(args, cfg), image_size_of(args, cfg)
    same_folder = Path(root).resolve() == Path(cfg.get("data_dir") or root).resolve()
    if name == cfg.get("data", "cifar10") and same_folder and size == cfg["image_size"]:
        return ""
    label = re.sub(r"[^A-Za-z0-9_.]+", "_", Path(root).resolve().name) if name == "imagefolder" else name
    return f"-on-{label}-{size}px"


def load_data(args, cfg) -> Data:
    """Train and test images cut to the asked stratified subsets, and the AutoAttack sample."""
    name, root, size = dataset_of(args, cfg), data_root(args, cfg), image_size_of(args, cfg)
    train_x, train_y = load_dataset(name, root, train=True, download=args.download, image_size=size)
    test_x, test_y = load_dataset(name, root, train=False, download=args.download, image_size=size)
    source = describe_data(name, root, train_y, test_x, test_y)
    train_idx, train_rec = _sample(train_y, args.subset_train, args.subset_seed, "--subset-train")
    test_idx, test_rec = _sample(test_y, args.subset_test, args.subset_seed, "--subset-test")
    if train_idx is not None:
        train_x, train_y = train_x[train_idx], train_y[train_idx]
    if test_idx is not None:
        test_x, test_y = test_x[test_idx], test_y[test_idx]
    aa_idx, aa_rec = _sample(test_y, args.autoattack_samples, args.subset_seed, "--autoattack-samples")
    if aa_rec is not None:  # fingerprinted as indices into the full test set, like --subset-test's
        aa_rec["sha1"] = index_digest(aa_idx if test_idx is None else test_idx[aa_idx])
    return Data(train_x, train_y, test_x, test_y, aa_idx, {"train": train_rec, "test": test_rec, "autoattack": aa_rec},
                source)


def build_classifier(encoder, args, cfg, num_classes, device) -> Classifier:
    """Encoder + a fresh linear head; with test views, N views drawn once from --seed, as the training run
    cut them (its preset and any crop overrides)."""
    augment = views = None
    if args.test_views > 1:
        augment = run_augment(cfg, args.test_views)
        views = augment.sample_params(1, "cpu", generator=torch.Generator().manual_seed(args.seed)).to(device)
    head = linear_head(encoder.feature_dim(args.features), num_classes)
    return Classifier(encoder, head, args.features, augment, views).to(device).eval()


def classifier_layout(model: Classifier, args, cfg, device) -> str:
    """--channels-last as 'on' or 'off' for this evaluation (``utils.engine.layout``); the CPU's probe times an attack's
    pass, to the images, through the classifier itself."""
    size = image_size_of(args, cfg)

    def probe():
        with torch.random.fork_rng(devices=[]):
            images = torch.rand(32, 3, size, size, device=device, requires_grad=True)
        return layout_seconds(model, images)

    return choose_layout(args.channels_last, device, cfg["width"], max(size, cfg["view_size"]), probe)


def robust_accuracy(model, images, labels, eps_list, steps, batch_size, device, step_size=None, random_start=True):
    """Percent correct on clean uint8 images and under PGD (cross-entropy, ``steps`` steps of ``step_size``,
    default eps/4) at each eps; an image counts under attack only if it is also correct clean. Every image
    counted once, in order. Returns (clean, {eps: accuracy}, n)."""
    robust = {eps: 0 for eps in eps_list}
    clean = n = 0
    bar = tqdm(total=len(images), desc=f"PGD-{steps}", unit="img", leave=False, disable=None)
    for i in range(0, len(images), batch_size):
        x, y = images[i: i + batch_size].to(device).float().div_(255), labels[i: i + batch_size].to(device)
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        clean += int(correct.sum())
        for eps in eps_list:
            x_adv = pgd_linf(lambda xa: F.cross_entropy(model(xa), y, reduction="sum"), x, eps,
                             eps / 4 if step_size is None else step_size, steps, random_start=random_start)
            with torch.no_grad():
                robust[eps] += int((correct & (model(x_adv).argmax(1) == y)).sum())
        n += len(x)
        bar.update(len(x))
    bar.close()
    return 100.0 * clean / n, {eps: 100.0 * c / n for eps, c in robust.items()}, n


def autoattack_results(model, images, labels, args, device, done=None, key="autoattack", attacks=None) -> dict:
    """AutoAttack at each --eps (``attacks``: only these leading components of it): the JSON fields ``key`` (final
    robust %), ``key_breakdown`` (% after each attack, and its seconds), ``key_samples`` and ``key_warnings``
    (AutoAttack's own, if any). ``done``: {eps: its fields} of the radii already attacked, taken as they are, and
    filled as each radius finishes."""
    x, y = images.to(device).float().div_(255), labels.to(device)
    done = {} if done is None else done
    for eps in sorted(set(args.eps)):
        label = eps_label(eps)
        if label in done:
            continue
        _, accuracy, seconds, notes = autoattack_cascade(model, x, y, eps, args.seed, args.batch_size, device,
                                                         report=lambda line: print(f"{key} {label}: {line}",
                                                                                   file=sys.stderr, flush=True),
                                                         attacks=attacks)
        for note in notes:
            print(f"{key} at eps {label}: {note}", file=sys.stderr)
        done[label] = {"final": round(list(accuracy.values())[-1], 2), "notes": notes,
                       "breakdown": {**{k: round(v, 2) for k, v in accuracy.items()},
                                     "seconds": {k: round(s, 1) for k, s in seconds.items()}}}
    return {key: {k: v["final"] for k, v in done.items()},
            f"{key}_breakdown": {k: v["breakdown"] for k, v in done.items()}, f"{key}_samples": len(x),
            f"{key}_warnings": {k: v["notes"] for k, v in done.items() if v["notes"]}}


def fit_and_test(model: Classifier, data: Data, args, device, progress: Progress) -> dict:
    """Fine-tunes ``model`` by the protocol, then tests it: the result's accuracy fields and stage times. Each
    finished stage is recorded in ``progress``, and a stage an earlier interrupted call finished is taken from it."""
    fit(model, data, args, device, progress)
    model.eval().requires_grad_(False)
    if "pgd" not in progress.done:
        started = time.monotonic()
        eps_list = sorted(set(args.eps) | (set(SWEEP) if args.eps_sweep else set()))
        clean, robust, n = robust_accuracy(model, data.test_x, data.test_y, eps_list, args.pgd_steps,
                                           args.batch_size, device, args.pgd_step_size, args.random_start)
        progress.done["pgd"] = {"clean": round(clean, 2), "pgd": {eps_label(e): round(a, 2) for e, a in robust.items()},
                                "n_test": n}
        progress.stage_seconds["pgd"] = round(time.monotonic() - started, 1)
    out = {**progress.done["pgd"], "n_train": len(data.train_x)}
    if args.autoattack or args.screen:
        key, attacks = ("autoattack", None) if args.autoattack else ("screen", SCREEN)
        index = data.autoattack_index
        x, y = (data.test_x, data.test_y) if index is None else (data.test_x[index], data.test_y[index])
        started = time.monotonic()
        out.update(autoattack_results(model, x, y, args, device, progress.done.setdefault(key, {}), key, attacks))
        progress.stage_seconds[key] = round(progress.stage_seconds.get(key, 0) + time.monotonic() - started, 1)
    out["stage_seconds"] = dict(progress.stage_seconds)
    return out


def fit(model: Classifier, data: Data, args, device, progress: Progress) -> None:
    """The protocol's fine-tuning, or the fitted state an earlier interrupted call kept."""
    state = progress.fitted_state()
    if state is not None:
        model.head.load_state_dict(state["head"])
        if "encoder" in state:
            model.encoder.load_state_dict(state["encoder"])
        print(f"resumed: the fitted head{' and encoder' if 'encoder' in state else ''} of {progress.pt.name}",
              file=sys.stderr)
        return
    started = time.monotonic()
    PROTOCOLS[args.protocol].fit(model, data.train_x, data.train_y, args, device)
    progress.done["fitted"] = True
    progress.stage_seconds["finetune"] = round(time.monotonic() - started, 1)


def result_paths(args, out_dir: Path, suffix: str = ""):
    """(JSON, fitted .pt): one pair per (protocol, features, views, checkpoint, data evaluated on), so evaluations
    side by side never overwrite each other. A run directory is named by the file evaluated in it, ``last``;
    ``suffix`` names the data of a transfer evaluation (``transfer_suffix``)."""
    stem = checkpoint_file(args.checkpoint).stem
    path = out_dir / result_name(args.protocol, args.features, args.test_views, stem, args.weights, args.screen, suffix)
    return path, path.with_suffix(".pt")


# Settings that do not change what an evaluation measures: rerunning with other values is the same evaluation.
# The checkpoint is compared by what it holds (``checkpoint_identity``), not by how its path was written.
# --channels-last changes float rounding only. --batch-size and --device are not among them: PGD's random starts
# and AutoAttack's seeding are drawn per batch, on the device.
SAME_EVALUATION = ("out", "download", "checkpoint", "channels_last")


def checkpoint_identity(path, meta) -> dict:
    """Which training state was evaluated: the file, its epoch and the digest of the bytes the encoder was
    loaded from (a run's last.pt changes as it trains on)."""
    return {"file": str(checkpoint_file(path).resolve()), "epoch": meta["epoch"], "sha1": meta["sha1"][:16]}


def finished(meta):
    """Whether the checkpoint is a finished run (its epoch reached the planned epochs); None where unknown."""
    planned = (meta.get("config") or {}).get("epochs")
    return None if meta.get("epoch") is None or not planned else meta["epoch"] >= planned


def warn_if_unfinished(path, meta) -> None:
    planned = (meta.get("config") or {}).get("epochs")
    if finished(meta) is False:
        print(f"note: {path} stopped at epoch {meta['epoch']} of {planned}: this evaluates an unfinished run",
              file=sys.stderr)


def another_evaluation(json_path, args, identity):
    """Why the result file ``json_path`` holds another evaluation than this one, or None where it is absent,
    unreadable (nothing worth keeping) or a rerun of this evaluation of the same checkpoint state."""
    try:
        earlier = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    now = json.loads(json.dumps(plain(vars(args))))
    settings = earlier.get("settings", {})
    settings = {**LEGACY_SETTINGS, **settings}
    changed = [(f"--{k.replace('_', '-')} was {settings.get(k)}") for k in now
               if k not in SAME_EVALUATION and settings.get(k) != now[k]]
    if earlier.get("checkpoint_identity") != identity:
        changed.insert(0, f"it evaluated {earlier.get('checkpoint_identity', {}).get('file', 'another checkpoint')} "
                          f"at epoch {earlier.get('checkpoint_identity', {}).get('epoch')}")
    return changed[0] if changed else None


def refuse_to_replace_another_evaluation(json_path, args, identity):
    """A result file is replaced only by a rerun of the same evaluation of the same checkpoint state."""
    reason = another_evaluation(json_path, args, identity)
    if reason:
        raise UsageError(f"{json_path} holds another evaluation ({reason}); pass --out NEW_FOLDER to keep both")


def save_result(result, model: Classifier, args, num_classes, json_path, identity):
    """Writes the result and its fitted model; returns their paths. The name is checked again under the
    folder's lock, since an evaluation started alongside may have taken it since this one began: then this
    one takes the next free name (``NAME-2.json``, ...) rather than replace the other's pair."""
    with folder_lock(json_path.parent):
        path = json_path
        for k in itertools.count(2):
            if another_evaluation(path, args, identity) is None:
                break
            path = json_path.with_name(f"{json_path.stem}-{k}.json")
        write_json(path, result, exclusive=not path.exists())
        save_fitted(model, args, num_classes, path.with_suffix(".pt"))
    if path != json_path:
        print(f"note: {json_path.name} was written by another evaluation while this one ran; this one is "
              f"{path.name}", file=sys.stderr)
    return path, path.with_suffix(".pt")


def save_fitted(model: Classifier, args, num_classes, path) -> None:
    """The head, and for aff the fine-tuned encoder too (its trunk changed; the rest is the checkpoint's)."""
    state = {"protocol": args.protocol, "feature_kind": args.features, "num_classes": num_classes,
             "test_views": args.test_views, "head": model.head.state_dict()}
    if args.protocol == "aff":
        state["encoder"] = model.encoder.state_dict()
    save_checkpoint(state, path)


def evaluate(method: str, argv=None):
    args = build_parser(method).parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    note_batch_size(args.batch_size)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    encoder, meta = load_encoder(args.checkpoint, method, args.weights)
    fill_protocol_defaults(args, dataset_of(args, meta["config"]))
    data = load_data(args, meta["config"])
    num_classes = int(max(data.train_y.max(), data.test_y.max())) + 1
    if args.autoattack or args.screen:
        check_autoattack_can_run(num_classes, "--autoattack" if args.autoattack else "--screen")
    ckpt_path = checkpoint_file(args.checkpoint)
    json_path, _ = result_paths(args, make_dir(args.out or ckpt_path.parent), transfer_suffix(args, meta["config"]))
    identity = checkpoint_identity(args.checkpoint, meta)
    warn_if_unfinished(ckpt_path, meta)
    refuse_to_replace_another_evaluation(json_path, args, identity)
    model = build_classifier(encoder.to(device), args, meta["config"], num_classes, device)
    layout = classifier_layout(model, args, meta["config"], device)
    model.to(memory_format=FORMATS[layout])
    progress = Progress(json_path, {k: v for k, v in vars(args).items() if k not in SAME_EVALUATION}, identity)
    try:
        measured = fit_and_test(model, data, args, device, progress)
    except KeyboardInterrupt:
        kept = progress.keep(lambda path: save_fitted(model, args, num_classes, path))
        print(f"interrupted: {kept}; run the same command again to continue from there", file=sys.stderr)
        sys.exit(130)
    result = {"method": method, "regime": meta["regime"], "checkpoint": str(ckpt_path), "checkpoint_identity": identity,
              "weights": args.weights, "finished": finished(meta), "protocol": args.protocol, "features": args.features,
              "test_views": args.test_views, **measured, **provenance(args, meta, data, device, layout),
              "seconds": round(time.monotonic() - started, 1)}
    json_path, fitted_path = save_result(result, model, args, num_classes, json_path, identity)
    progress.clear()
    _print_row(result, ckpt_path, json_path, fitted_path)
    return result


def check_autoattack_can_run(num_classes: int, flag: str = "--autoattack"):
    """Before any fitting: the reference AutoAttack is installed and the data has the classes it targets."""
    try:
        reference_autoattack()
    except ImportError as e:
        raise UsageError(f"{flag}: {e}") from None
    if num_classes < 10:
        raise UsageError(f"{flag}: standard AutoAttack targets the 9 classes after the true one, so it needs at "
                         f"least 10 classes; this data has {num_classes}")


def provenance(args, meta: dict, data, device, layout) -> dict:
    """What a result was measured on and with: its data, the training's minutes, machines and code, this machine
    and this code."""
    return {"data": data.source, "trained_on": trained_on(meta["config"]), "subsets": data.subsets,
            "train_seconds": meta["train_seconds"], "train_machines": meta["train_machines"],
            "train_code": meta["train_code"], "machine": machine(device), "code": code_version(),
            "channels_last": layout, "train_config": meta["config"], "settings": dict(vars(args))}


def _print_row(result, ckpt_path, json_path, fitted_path):
    cells = [f"{result['protocol']} {result['features']} v{result['test_views']}", f"clean {result['clean']:.2f}"]
    cells += [f"PGD({k}) {v:.2f}" for k, v in result["pgd"].items()]
    cells += [f"AA({k}) {v:.2f}" for k, v in result.get("autoattack", {}).items()]
    aa = f", AutoAttack n={result['autoattack_samples']}" if "autoattack_samples" in result else ""
    print(f"| {ckpt_path} | " + " | ".join(cells) + f" | n={result['n_test']}{aa} |")
    print(f"wrote {json_path} and {fitted_path}")


def main(method: str):
    run_main(evaluate, method)
