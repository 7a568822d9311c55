"""t-SNE picture of how far an L-inf attack moves an encoder's features.

    python -m utils.tsne CHECKPOINT [--n 1000] [--eps 8/255] [--steps 20] [--features pre] [--out PNG]

Features of N class-stratified test images, clean (dots) and under PGD (crosses), coloured by class and
embedded together by scikit-learn's t-SNE; thin grey lines join a subset of clean points to their perturbed
selves. The attack needs no labels and no probe: PGD (step eps/4, uniform random start) maximises the
squared distance between the perturbed image's L2-normalised feature and the clean one, with the encoder in
eval mode. Also prints the mean cosine similarity between clean and perturbed features.
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attacks import pgd_linf
from utils.core.checkpoint import clean_state_dict, load_checkpoint
from utils.core.cli import Parser, default_data_dir, eps_label, nonneg_int, positive_int, radius, run_main
from utils.core.data import DATASETS, load_dataset, stratified_subset
from utils.core.errors import UsageError
from utils.core.files import resolve_device
from utils.engine.encoders import load_encoder
from utils.methods import METHODS


def build_parser() -> Parser:
    p = Parser(prog="python -m utils.tsne", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a .pt written by a training script (or its run directory)")
    p.add_argument("--n", type=positive_int, default=1000, help="test images, class-stratified")
    p.add_argument("--eps", type=radius, default=8 / 255, help="L-inf radius (default: 8/255)")
    p.add_argument("--steps", type=nonneg_int, default=20, help="PGD steps of eps/4")
    p.add_argument("--features", choices=("pre", "backbone"), default="pre")
    p.add_argument("--lines", type=nonneg_int, default=100, help="clean-to-perturbed lines drawn")
    p.add_argument("--data", choices=DATASETS, default=None, help="dataset (default: the one the encoder trained on)")
    p.add_argument("--data-dir", default=None,
                   help="dataset root (default: the training run's, $CFAMC_DATA_DIR, ./data)")
    p.add_argument("--batch-size", type=positive_int, default=250, help="images per attack batch")
    p.add_argument("--out", type=Path, default=None,
                   help="PNG to write (default: "
                        "tsne-<data>-<features>-eps<eps>-pgd<steps>-n<n>-lines<lines>-seed<seed>.png "
                        "beside the checkpoint)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0, help="picks the images, the PGD start and the t-SNE start")
    return p


def method_of(ckpt: dict, path) -> str:
    """The checkpoint's method; for a bare state dict (the original code's), the one its projection size names."""
    if "method" in ckpt:
        return ckpt["method"]
    projection = clean_state_dict(ckpt["model"]).get("projection.3.weight")
    owners = [name for name, cls in METHODS.items() if projection is not None and cls.z_dim == len(projection)]
    if len(owners) != 1:
        raise UsageError(f"{path} records no method, and its projection does not tell which one it is")
    return owners[0]


def load_inputs(args):
    """(encoder in eval mode, test images uint8 (n, 3, S, S) at the size the encoder trained at, labels int64 (n,),
    the dataset's name) for the parsed ``args``."""
    encoder, meta = load_encoder(args.checkpoint, method_of(load_checkpoint(args.checkpoint), args.checkpoint))
    cfg = meta["config"]
    data = args.data or cfg.get("data", "cifar10")
    data_dir = args.data_dir or cfg.get("data_dir") or default_data_dir() or "data"
    images, labels = load_dataset(data, data_dir, train=False, image_size=cfg["image_size"])
    pick = stratified_subset(labels, min(args.n, len(labels)), args.seed)
    return encoder, images[pick], labels[pick], data


def attack_features(encoder, images, eps, steps, kind="pre", batch_size=250, device="cpu", random_start=True,
                    generator=None):
    """Clean and PGD-perturbed features, float32 (N, d) on the CPU, of uint8 ``images`` (N, 3, H, W).

    ``encoder`` must be in eval mode, so that an image's features do not depend on the rest of its batch.
    Without a random start the attack cannot move: the distance it climbs has zero gradient at the image.
    """
    clean_out, adv_out = [], []
    for i in range(0, len(images), batch_size):
        x = images[i: i + batch_size].to(device).float().div_(255)
        with torch.no_grad():
            clean = encoder.features(x, kind).float()
        target = F.normalize(clean, dim=1)

        def drift(x_adv):
            return (F.normalize(encoder.features(x_adv, kind).float(), dim=1) - target).pow(2).sum()

        x_adv = pgd_linf(drift, x, eps, eps / 4, steps, random_start, generator)
        with torch.no_grad():
            adv_out.append(encoder.features(x_adv, kind).float().cpu())
        clean_out.append(clean.cpu())
    return torch.cat(clean_out), torch.cat(adv_out)


def embed_2d(clean: torch.Tensor, adv: torch.Tensor, seed: int) -> np.ndarray:
    """(2N, 2) t-SNE coordinates: rows [0, N) the clean features (N, d), rows [N, 2N) the perturbed ones.

    Both sets in one embedding, so their distances are comparable; features L2-normalised first, so that
    distances are cosine distances, the geometry the attack and the kNN monitor use.
    """
    from sklearn.manifold import TSNE

    points = F.normalize(torch.cat([clean, adv]), dim=1).numpy()
    perplexity = min(30.0, (len(points) - 1) / 3)  # t-SNE needs fewer neighbours than points
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def class_colours(num_classes: int) -> np.ndarray:
    """(num_classes, 3) RGB: tab10's distinct colours when they suffice, else evenly spaced along turbo."""
    import matplotlib

    if num_classes <= 10:
        return np.array(matplotlib.colormaps["tab10"].colors)[:num_classes]
    return matplotlib.colormaps["turbo"](np.linspace(0, 1, num_classes))[:, :3]


def plot(points: np.ndarray, labels: torch.Tensor, lines: int, title: str, out: Path, seed: int) -> None:
    """Clean points (first half of ``points`` (2N, 2)) as dots, perturbed ones as crosses, coloured by
    ``labels`` (N,); ``lines`` randomly chosen pairs joined. Writes a PNG to ``out``."""
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    n, classes = len(labels), int(labels.max()) + 1
    palette = class_colours(classes)
    colours = palette[labels.numpy()]
    joined = np.random.default_rng(seed).permutation(n)[:lines]
    fig = Figure(figsize=(8, 8))
    ax = fig.add_subplot()
    ax.add_collection(LineCollection(np.stack([points[joined], points[n + joined]], axis=1), colors="0.5",
                                     linewidths=0.3, alpha=0.6, zorder=1))
    ax.scatter(*points[:n].T, c=colours, marker="o", s=10, linewidths=0, zorder=2)
    ax.scatter(*points[n:].T, c=colours, marker="x", s=14, linewidths=0.7, zorder=3)
    kinds = ax.legend(handles=[Line2D([], [], color="k", marker="o", ls="", label="clean"),
                               Line2D([], [], color="k", marker="x", ls="", label="PGD")], loc="upper left")
    ax.add_artist(kinds)
    if classes <= 20:  # beyond that a legend of colours says little
        ax.legend(handles=[Line2D([], [], color=palette[k], marker="o", ls="", label=f"class {k}")
                           for k in range(classes)], loc="upper right", fontsize=7, ncol=2)
    ax.set(title=title, xticks=[], yticks=[])
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=150, bbox_inches="tight")
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror}; choose another --out") from None


def tsne(argv=None) -> Path:
    """The command line (``argv``: its arguments; None: sys.argv's). Returns the path of the PNG written."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    encoder, images, labels, data = load_inputs(args)
    generator = torch.Generator(device).manual_seed(args.seed)
    clean, adv = attack_features(encoder.to(device), images, args.eps, args.steps, args.features, args.batch_size,
                                 device, generator=generator)
    cosine = F.cosine_similarity(clean, adv, dim=1).mean().item()
    attack = f"PGD-{args.steps} at eps {eps_label(args.eps)}"
    print(f"mean cosine similarity of clean and {attack} {args.features} features: {cosine:.4f} "
          f"({len(images)} test images)")
    checkpoint = Path(args.checkpoint)
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    settings = (f"{data}-{args.features}-eps{eps_label(args.eps).replace('/', '-')}-pgd{args.steps}-n{args.n}"
                f"-lines{args.lines}-seed{args.seed}")
    out = args.out or folder / f"tsne-{settings}.png"  # one file per picture: another one never overwrites it
    title = f"{checkpoint.name}: {args.features} features, {attack}, mean cosine {cosine:.3f}"
    plot(embed_2d(clean, adv, args.seed), labels, args.lines, title, out, args.seed)
    print(f"wrote {out}")
    return out


def main():
    run_main(tsne)


if __name__ == "__main__":
    main()
