"""The sizes a plan of rows runs at: every row's epochs times one factor (keeping the rows' relative costs), and
the flags that shrink the network, the data and the evaluation."""
from dataclasses import dataclass

from utils.engine.config import parse_config, script_of


@dataclass(frozen=True)
class Scale:
    epoch_factor: float  # every row's epochs times this, rounded, at least 1
    train: tuple = ()
    evaluate: tuple = ()
    note: str = ""
    epochs: int = 0  # instead of the factor, when set

    @property
    def autoattack(self) -> bool:
        """Whether the scale's evaluation runs AutoAttack."""
        return "--autoattack" in self.evaluate

    def evaluate_with(self, attack: str) -> tuple:
        """The evaluation flags with AutoAttack's as ``attack``: ``--autoattack`` (as they are) or ``--screen``."""
        return tuple(attack if flag == "--autoattack" else flag for flag in self.evaluate)


SCALES = {
    "full": Scale(1.0, (), ("--autoattack",), "the scripts' defaults: the paper's settings"),
    # Between small and full: 5x the images and 2x the width of small, evaluated on 2,000 test images (a row's
    # standard error about one point), AutoAttack on 500.
    "medium": Scale(0.1, ("--width", "16", "--hidden-dim", "1024", "--subset", "10000", "--knn-test", "2000"),
                    ("--subset-train", "10000", "--no-train-augment", "--subset-test", "2000", "--autoattack",
                     "--autoattack-samples", "500"),
                    "epochs x 0.1, width 16, hidden 1024, 10,000 training images; SLF on 10,000 images without "
                    "augmentation, tested on 2,000; AutoAttack on 500"),
    # A narrower ResNet, a smaller projector and a class-stratified 2,000-image training set bring the whole
    # table to about two hours on a 2-core CPU.
    "small": Scale(0.1, ("--width", "8", "--hidden-dim", "512", "--subset", "2000", "--knn-test", "1000"),
                   ("--subset-train", "10000", "--no-train-augment", "--subset-test", "1000", "--autoattack",
                    "--autoattack-samples", "200"),
                   "epochs x 0.1, width 8, hidden 512, 2,000 training images; SLF on 10,000 images without "
                   "augmentation, tested on 1,000; AutoAttack on 200"),
    # small's data, epochs and evaluation at medium's width: the width half of the step from small to medium, to
    # tell whether a difference between rows that changes with scale follows the network's size or the data's.
    "small-w16": Scale(0.1, ("--width", "16", "--hidden-dim", "1024", "--subset", "2000", "--knn-test", "1000"),
                       ("--subset-train", "10000", "--no-train-augment", "--subset-test", "1000", "--autoattack",
                        "--autoattack-samples", "200"),
                       "epochs x 0.1, width 16, hidden 1024, 2,000 training images; SLF on 10,000 images without "
                       "augmentation, tested on 1,000; AutoAttack on 200"),
    "smoke": Scale(0.0, ("--width", "4", "--hidden-dim", "16", "--subset", "64", "--batch-size", "16",
                         "--num-views", "5", "--pgd-steps", "1", "--replays", "2", "--knn-test", "20"),
                   ("--subset-train", "64", "--no-train-augment", "--subset-test", "20", "--finetune-epochs", "1",
                    "--pgd-steps", "1"),
                   "two epochs of a toy model, for tests", epochs=2),
}


def scaled_train_flags(method: str, regime: str, scale: Scale, epochs: int = 0) -> list:
    """The training flags of a script's run at ``scale``: its epochs (``epochs`` when given, else the script's
    times the factor), then the scale's flags that the script has (a flag it lacks is not its concern)."""
    if not epochs and (scale.epochs or scale.epoch_factor != 1):
        default = script_of(method, regime)[1].get("epochs", 1)
        epochs = scale.epochs or max(1, round(default * scale.epoch_factor))
    argv = ["--epochs", str(epochs)] if epochs else []
    accepted = parse_config(method, regime, None, [])[2]._option_string_actions
    return argv + [arg for flag, value in zip(scale.train[::2], scale.train[1::2]) if flag in accepted
                   for arg in (flag, value)]
