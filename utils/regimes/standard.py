from utils.regimes.base import Regime


class Standard(Regime):
    """The loss on clean views, one optimizer step per minibatch."""

    name, display = "standard", "standard training"

    def step(self, views):
        loss, terms = self.learner.loss(views)
        self.learner.update(loss)
        return loss, terms
