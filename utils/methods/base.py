"""What a self-supervised method declares. A new method is a subclass in its own file plus one line in
``utils/methods/__init__.py`` (or a ``register`` call): the engine, evaluator, report and benchmarks read
everything else from here."""
import torch


class Method:
    """One self-supervised objective on view-major embeddings.

    Class attributes (the declaration):
      name, display   registry key (stored in checkpoints) and the method's name in tables
      z_dim           embedding size of the projector's last layer
      views           fixed number of views per image, or None for a ``--num-views`` flag defaulting to
                      ``default_views``
      augment         ``MultiViewAugment`` settings that differ from its defaults (jitter, blur_p, solarize_p)
      term_names      names of the extra loss terms that ``loss`` returns, logged with the loss
      per_view_forward  True: each view is its own forward pass, so BatchNorm normalises every view with its
                      own batch statistics; False: all views in one forward (``--per-view-forward`` overrides)
      clean_views     leading views an adversary leaves clean (SimCLR's view 1); the rest are perturbed
    """

    name = ""
    display = ""
    z_dim = 128
    views = None
    default_views = 2
    augment: dict = {}
    term_names: tuple = ()
    per_view_forward = False
    clean_views = 0

    def __init__(self, cfg: dict):
        self.cfg = cfg

    @classmethod
    def add_flags(cls, group) -> None:
        """Adds the method's own hyperparameters to an argparse group."""

    def loss(self, z: torch.Tensor):
        """z: (V, B, d) embeddings, view-major, over the global batch. Returns (scalar loss, [scalar terms])
        with one detached term per ``term_names``."""
        raise NotImplementedError

    def attack_loss(self, z: torch.Tensor) -> torch.Tensor:
        """z as ``loss`` -> the scalar a PGD attack maximises; by default the training loss."""
        return self.loss(z)[0]

    def original_attack_views(self, clean: torch.Tensor, target: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """The views whose loss the original code's PGD attack maximises (``--attack-style original``), given
        the clean rows, the rows to perturb and their perturbed copy; by default the training views."""
        return torch.cat([clean, x_adv])

    def embed(self, net, views: torch.Tensor, batch: int) -> torch.Tensor:
        """(k*b, 3, H, W) view-major views, ``batch`` = b images each -> (k*b, z_dim) embeddings through ``net``."""
        if not self.cfg["per_view_forward"]:
            return net(views)
        return torch.cat([net(v) for v in views.split(batch)])
