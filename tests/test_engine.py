"""The engine is method- and regime-agnostic: a method or a regime defined here, in the test file alone,
trains end to end; and the fidelity details of the built-in methods (per-view BatchNorm, float32 stem)."""
import math

import pytest
import torch
import torch.nn.functional as F

from utils.core.checkpoint import load_checkpoint
from utils.core.errors import UsageError
from utils.core.files import read_jsonl
from utils.engine.train import Trainer, parse_config
from utils.methods import METHODS, Method
from utils.regimes import REGIMES, Regime, add_radius_flags

from conftest import TINY


class CosineTwoView(Method):
    """A toy objective: pull each image's two views together by cosine similarity (collapse and all)."""

    name, display = "toy-cosine", "Toy cosine"
    z_dim = 16
    views = 2
    clean_views = 1
    term_names = ("similarity",)

    @classmethod
    def add_flags(cls, group):
        group.add_argument("--toy-scale", type=float, default=1.0)

    seen: list = []  # every similarity the loss computed, in order

    def loss(self, z):
        similarity = F.cosine_similarity(z[0].float(), z[1].float(), dim=-1).mean()
        self.seen.append(similarity.item())
        return -self.cfg["toy_scale"] * similarity, [similarity.detach()]


class RandomNoise(Regime):
    """A toy training attack: uniform noise in the eps-ball on the perturbed views, counted steps in its state."""

    name, display = "toy-noise", "toy noise training"

    def __init__(self, cfg, learner):
        super().__init__(cfg, learner)
        self.batches = 0

    @classmethod
    def add_flags(cls, group):
        add_radius_flags(group)

    def step(self, views):
        clean, target = self.split(views)
        noisy = (target + torch.empty_like(target).uniform_(-self.cfg["eps"], self.cfg["eps"])).clamp(0, 1)
        loss, terms = self.learner.loss(torch.cat([clean, noisy]))
        self.learner.update(loss)
        self.batches += 1
        return loss, terms

    def state_dict(self):
        return {"batches": self.batches}

    def load_state_dict(self, state):
        self.batches = state["batches"]


@pytest.fixture
def toy_registered():
    METHODS.register(CosineTwoView)
    REGIMES.register(RandomNoise)
    yield
    del METHODS[CosineTwoView.name], REGIMES[RandomNoise.name]


def train(tmp_path, tiny_data, method, regime, *extra, defaults=None):
    argv = ["--data-dir", str(tiny_data), "--subset", "32", "--out-dir", str(tmp_path), *map(str, TINY), *extra]
    cfg, given, _ = parse_config(method, regime, defaults or {}, argv)
    return Trainer(cfg, given).run()


@pytest.mark.parametrize("regime", ["standard", "pgd", "free"])
def test_a_method_defined_in_a_test_trains_in_every_regime(tmp_path, tiny_data, toy_registered, regime, monkeypatch):
    extra = {"standard": [], "pgd": ["--pgd-steps", "1"], "free": ["--replays", "2"]}[regime]
    monkeypatch.setattr(CosineTwoView, "seen", [])
    per_step, train_step = [], Trainer.train_step

    def recorded(self, batch):  # a step's logged terms are those of its last loss: the one it trained on
        out = train_step(self, batch)
        per_step.append(CosineTwoView.seen[-1])
        return out

    monkeypatch.setattr(Trainer, "train_step", recorded)
    out = train(tmp_path, tiny_data, "toy-cosine", regime, "--toy-scale", "2", *extra)
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["method"], ckpt["regime"], ckpt["epoch"]) == ("toy-cosine", regime, 2)
    assert ckpt["model"]["projection.3.weight"].shape[0] == 16 and ckpt["config"]["toy_scale"] == 2
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert len(per_step) == 4  # 32 images in minibatches of 16, two epochs
    for r, epoch in zip(records, (per_step[:2], per_step[2:])):
        assert r["similarity"] == pytest.approx(sum(epoch) / 2, rel=1e-5)
        assert math.isclose(r["loss"], -2 * r["similarity"], rel_tol=1e-4)


def test_a_regime_defined_in_a_test_trains_checkpoints_and_resumes(tmp_path, tiny_data, toy_registered):
    out = train(tmp_path / "a", tiny_data, "empssl", "toy-noise", "--num-views", "2", "--eps", "4/255", "--epochs", "1")
    assert load_checkpoint(out / "last.pt")["regime_state"] == [{"batches": 2}]
    cfg, given, _ = parse_config("empssl", "toy-noise", {}, ["--resume", str(out), "--epochs", "2"])
    with pytest.raises(UsageError, match="cannot resume .* --epochs 2"):  # the run's config is the checkpoint's
        Trainer(cfg, given)
    cfg, given, _ = parse_config("simclr", "toy-noise", {}, ["--data-dir", str(tiny_data), "--subset", "32",
                                                              "--out-dir", str(tmp_path / "b"), *map(str, TINY)])
    trainer = Trainer(cfg, given)
    trainer.run()
    assert trainer.regime.batches == 4 and trainer.step == 4


def test_simclr_loss_is_that_of_two_forwards_with_per_view_batchnorm(tmp_path, tiny_data):
    cfg, given, _ = parse_config("simclr", "standard", {}, ["--data-dir", str(tiny_data), "--subset", "32",
                                                            "--out-dir", str(tmp_path), *map(str, TINY)])
    t = Trainer(cfg, given)
    views = t.augment(t.images[:16])
    with torch.no_grad():
        loss, _ = t.loss(views)
        z1, z2 = t.model(views[:16]), t.model(views[16:])  # train mode: each view its own batch statistics
        joint = t.model(views)  # one forward: statistics of both views together
    from losses import nt_xent

    torch.testing.assert_close(loss, nt_xent(z1, z2, 0.07))
    assert not torch.allclose(nt_xent(joint[:16], joint[16:], 0.07), loss)


@pytest.mark.parametrize("method,flag", [("empssl", "--per-view-forward"), ("simclr", "--no-per-view-forward")])
def test_the_forward_flag_decides_which_views_share_batch_statistics(tmp_path, tiny_data, method, flag):
    views = ["--num-views", "2"] if method == "empssl" else []
    cfg, given, _ = parse_config(method, "standard", {}, ["--data-dir", str(tiny_data), "--subset", "32",
                                                          "--out-dir", str(tmp_path), *map(str, TINY), *views, flag])
    t = Trainer(cfg, given)
    x = t.augment(t.images[:16])
    with torch.no_grad():
        z = t.method.embed(t.model, x, 16)
        per_view, joint = torch.cat([t.model(x[:16]), t.model(x[16:])]), t.model(x)
    torch.testing.assert_close(z, per_view if flag == "--per-view-forward" else joint)
    assert not torch.allclose(per_view, joint)


def test_bf16_step_on_cpu_feeds_the_stem_float32(tmp_path, tiny_data):
    cfg, given, _ = parse_config("empssl", "free", {}, ["--data-dir", str(tiny_data), "--subset", "32", "--out-dir",
                                                        str(tmp_path), *map(str, TINY), "--num-views", "2",
                                                        "--precision", "bf16", "--replays", "1"])
    t = Trainer(cfg, given)
    seen = {}
    stem = t.model.backbone.conv1
    stem.register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0].dtype, out=out.dtype))
    later = t.model.backbone.layer1[0].conv1
    later.register_forward_hook(lambda m, inp, out: seen.update(later=out.dtype))
    loss, _ = t.train_step(t.images[:16])
    assert t.amp and seen == {"inp": torch.float32, "out": torch.float32, "later": torch.bfloat16}
    assert torch.isfinite(loss)


def test_gpu_settings_run_on_the_cpu(tmp_path, tiny_data):
    """bf16 autocast, channels-last and a read-back every 50 steps: what a CUDA run does, on the CPU."""
    out = train(tmp_path, tiny_data, "empssl", "pgd", "--num-views", "2", "--pgd-steps", "1", "--precision", "bf16",
                "--channels-last", "on", "--log-every", "50")
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and all(math.isfinite(r["loss"]) for r in records)
    assert load_checkpoint(out / "last.pt")["config"]["channels_last"] == "on"
