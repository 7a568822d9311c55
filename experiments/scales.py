"""The sizes a plan of rows runs at: every row's epochs times one factor (keeping the rows' relative costs), and
the flags that shrink the network, the data and the evaluation."""
from dataclasses import dataclass, field

from utils.core.cli import flag_of, to_argv
from utils.engine.config import parse_config, script_of


@dataclass(frozen=True)
class Scale:
    """Settings keyed by their flags' names (``subset_train``: ``--subset-train``), in command-line order
    (``utils.core.cli.to_argv`` writes them)."""
    epoch_factor: float  # every row's epochs times this, rounded, at least 1
    train: dict = field(default_factory=dict)  # training settings the scale sets, where the script has them
    evaluate: dict = field(default_factory=dict)  # every evaluation's settings
    note: str = ""
    epochs: int = 0  # instead of the factor, when set

    @property
    def autoattack(self) -> bool:
        """Whether the scale's evaluation runs AutoAttack."""
        return bool(self.evaluate.get("autoattack"))

    def evaluate_with(self, attack: str) -> dict:
        """The evaluation settings with AutoAttack's as ``attack``: "autoattack" (as they are) or "screen"."""
        return {attack if key == "autoattack" else key: value for key, value in self.evaluate.items()}


SCALES = {
    "full": Scale(1.0, {}, dict(autoattack=True), "the scripts' defaults: the paper's settings"),
    # Between small and full: 5x the images and 2x the width of small, evaluated on 2,000 test images (a row's
    # standard error about one point), AutoAttack on 500.
    "medium": Scale(0.1, dict(width=16, hidden_dim=1024, subset=10000, knn_test=2000),
                    dict(subset_train=10000, no_train_augment=True, subset_test=2000, autoattack=True,
                         autoattack_samples=500),
                    "epochs x 0.1, width 16, hidden 1024, 10,000 training images; SLF on 10,000 images without "
                    "augmentation, tested on 2,000; AutoAttack on 500"),
    # A narrower ResNet, a smaller projector and a class-stratified 2,000-image training set bring the whole
    # table to about two hours on a 2-core CPU.
    "small": Scale(0.1, dict(width=8, hidden_dim=512, subset=2000, knn_test=1000),
                   dict(subset_train=10000, no_train_augment=True, subset_test=1000, autoattack=True,
                        autoattack_samples=200),
                   "epochs x 0.1, width 8, hidden 512, 2,000 training images; SLF on 10,000 images without "
                   "augmentation, tested on 1,000; AutoAttack on 200"),
    # small's data, epochs and evaluation at medium's width: the width half of the step from small to medium, to
    # tell whether a difference between rows that changes with scale follows the network's size or the data's.
    "small-w16": Scale(0.1, dict(width=16, hidden_dim=1024, subset=2000, knn_test=1000),
                       dict(subset_train=10000, no_train_augment=True, subset_test=1000, autoattack=True,
                            autoattack_samples=200),
                       "epochs x 0.1, width 16, hidden 1024, 2,000 training images; SLF on 10,000 images without "
                       "augmentation, tested on 1,000; AutoAttack on 200"),
    "smoke": Scale(0.0, dict(width=4, hidden_dim=16, subset=64, batch_size=16, num_views=5, pgd_steps=1, replays=2,
                             knn_test=20),
                   dict(subset_train=64, no_train_augment=True, subset_test=20, finetune_epochs=1, pgd_steps=1),
                   "two epochs of a toy model, for tests", epochs=2),
}


def scaled_train_flags(method: str, regime: str, scale: Scale, epochs: int = 0) -> list:
    """The training flags of a script's run at ``scale``: its epochs (``epochs`` when given, else the script's
    times the factor), then the scale's flags that the script has (a flag it lacks is not its concern)."""
    if not epochs and (scale.epochs or scale.epoch_factor != 1):
        default = script_of(method, regime)[1].get("epochs", 1)
        epochs = scale.epochs or max(1, round(default * scale.epoch_factor))
    accepted = parse_config(method, regime, None, [])[2]._option_string_actions
    return to_argv({"epochs": epochs or None, **{key: v for key, v in scale.train.items()
                                                 if flag_of(key) in accepted}})
