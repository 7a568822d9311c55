import torch

from attacks import FreeAdversary
from utils.core.cli import positive_int
from utils.regimes.base import Adversarial


class Free(Adversarial):
    """Free adversarial training (Shafahi et al., 2019): each minibatch replayed m times; every replay's one
    backward gives the parameters' and the persistent perturbation's gradients together."""

    name, display = "free", "free adversarial training"

    def __init__(self, cfg, learner):
        super().__init__(cfg, learner)
        self.adversary = FreeAdversary(learner.perturbed_shape, cfg["eps"], cfg["alpha"], learner.device)

    @classmethod
    def add_flags(cls, group):
        super().add_flags(group)
        group.add_argument("--replays", type=positive_int, default=3, help="replays m of each minibatch")

    @classmethod
    def steps_per_batch(cls, cfg):
        return cfg["replays"]

    @classmethod
    def passes_per_batch(cls, cfg):
        return cfg["replays"]

    def step(self, views):
        clean, target = self.split(views)
        for _ in range(self.cfg["replays"]):
            loss, terms = self.learner.loss(torch.cat([clean, self.adversary.perturb(target)]))
            self.learner.update(loss)
            self.adversary.step(target)
        return loss, terms

    def state_dict(self):
        return {k: v.cpu() if torch.is_tensor(v) else v for k, v in self.adversary.state_dict().items()}

    def load_state_dict(self, state):
        self.adversary.load_state_dict(state)
