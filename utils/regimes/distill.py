"""Adversarial distillation from a clean teacher (DeACL, Zhang et al., ECCV 2022), trained free (Shafahi et al.,
2019). A standard run of the same method is the teacher; the student, started from the teacher's weights (or from
scratch), matches the teacher's features on the method's clean views and keeps its features on their perturbed
copies close to its own on the clean ones: loss = -cos(s(x), t(x)) - k cos(s(x + delta), s(x)). The persistent
perturbation delta ascends that loss at every replay, as in free training, so the attack costs no extra pass; the
student's clean and perturbed views are two forwards (BatchNorm statistics per group).

The teacher's minutes count in the run's cost: the run records the teacher's identity and training time
(``teacher_identity``), and a resumed run checks that ``--teacher`` still holds the same bytes."""
import torch

from losses import distill_loss
from utils.core.cli import nonneg_float
from utils.regimes.free import Free


class Distill(Free):
    name, display = "distill", "adversarial distillation from a clean teacher, trained free"
    needs_teacher = True  # --teacher: a standard run's checkpoint of the same method
    minimises_method_loss = False  # the distillation loss, on features

    def __init__(self, cfg, learner):
        super().__init__(cfg, learner)
        self.teacher = learner.teacher  # loaded by the engine (utils/engine/teacher.py)

    @classmethod
    def add_flags(cls, group):
        super().add_flags(group)
        group.add_argument("--teacher", default=None,
                           help="the clean teacher: a standard run's checkpoint of the same method (main_empssl.py)")
        group.add_argument("--distill-coef", type=nonneg_float, default=2.0,
                           help="k, the weight of cos(s(x_adv), s(x)) (DeACL: 2)")
        group.add_argument("--distill-features", choices=("pre", "backbone"), default="pre",
                           help="the features distilled: pre (what the SLF probe reads) or backbone (DeACL's)")
        group.add_argument("--student-init", choices=("teacher", "random"), default="teacher",
                           help="the student's first weights: the teacher's, or a fresh encoder")

    @classmethod
    def terms(cls, cfg):
        return ("cos_teacher", "cos_adv")

    @classmethod
    def logged_terms(cls, cfg, method):
        return cls.terms(cfg)  # the method's loss is not the one minimised

    @classmethod
    def passes_per_batch(cls, cfg):
        """Per replay the clean and the perturbed views forward and backward; the teacher forwards once."""
        return 2 * cfg["replays"] + 1 / 3

    def features(self, encoder, views):
        """Features in float32 at least: the cosines of bf16 features under autocast would round away the signal."""
        with self.learner.autocast():
            out = encoder.features(views, self.cfg["distill_features"])
        return out.to(torch.promote_types(out.dtype, torch.float32))

    def step(self, views):
        clean, target = self.split(views)
        with torch.no_grad():
            teacher = self.features(self.teacher, views)
        for _ in range(self.cfg["replays"]):
            perturbed = torch.cat([clean, self.adversary.perturb(target)])
            student = self.features(self.learner.model, views)
            loss, cos_teacher, cos_adv = distill_loss(student, self.features(self.learner.model, perturbed), teacher,
                                                      self.cfg["distill_coef"])
            self.learner.update(loss)
            self.adversary.step(target)
        return loss, [cos_teacher, cos_adv]
