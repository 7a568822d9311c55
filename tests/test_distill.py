"""The distill regime (DeACL's objective under free perturbations): its loss against a formula written out, one
step against a transcription, a toy run with its teacher recorded, and a resume that checks the teacher."""
import copy
import json

import pytest
import torch

from losses import distill_loss
from utils.core.errors import UsageError
from utils.engine.optim import LARS
from utils.engine.train import Trainer, parse_config

from conftest import TINY

B, VIEWS, EPS, ALPHA = 16, 3, 8 / 255, 0.01


def test_the_loss_is_deacls_formula_written_out():
    torch.manual_seed(0)
    s, s_adv, t = torch.randn(5, 7), torch.randn(5, 7), torch.randn(5, 7)

    def cos(a, b):
        return sum(float(a[i] @ b[i]) / float(a[i].norm() * b[i].norm()) for i in range(len(a))) / len(a)

    loss, cos_teacher, cos_adv = distill_loss(s, s_adv, t, 2.0)
    assert loss.item() == pytest.approx(-cos(s, t) - 2.0 * cos(s_adv, s), rel=1e-5)
    assert (cos_teacher.item(), cos_adv.item()) == pytest.approx((cos(s, t), cos(s_adv, s)), rel=1e-5)
    assert not cos_teacher.requires_grad


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("teacher")
    cfg, given, _ = parse_config("empssl", "standard", {}, ["--data-dir", str(tiny_data), "--subset", "32",
                                                            "--out-dir", str(out), *TINY, "--epochs", "1",
                                                            "--num-views", str(VIEWS), "--knn-every", "0"])
    Trainer(cfg, given).run()
    return out / "last.pt"


def student(out, tiny_data, teacher_path, *extra):
    argv = ["--data-dir", str(tiny_data), "--subset", "32", "--out-dir", str(out), *TINY, "--num-views", str(VIEWS),
            "--knn-every", "0", "--teacher", str(teacher_path), *extra]
    cfg, given, _ = parse_config("empssl", "distill", None, argv)
    return Trainer(cfg, given)


def test_one_step_equals_its_transcription(tmp_path, tiny_data, teacher):
    t = student(tmp_path, tiny_data, teacher, "--replays", "1")
    torch.testing.assert_close(t.model.state_dict(), t.regime.teacher.state_dict())  # started from the teacher
    t.model.double()
    t.regime.teacher.double()
    views = t.augment(t.images[:B]).double()
    model, frozen = copy.deepcopy(t.model), copy.deepcopy(t.regime.teacher)
    # A perturbation from earlier minibatches (at zero, cos(s(x + delta), s(x)) is at its maximum: no direction)
    start = (torch.rand_like(views) * 2 - 1) * EPS
    t.regime.adversary.delta = start.clone()
    t.regime.step(views)

    # The transcription: one LARS step on the loss at the perturbation made valid for these views, then one signed
    # ascent step of the perturbation on the same loss, projected to the eps-ball and the image range.
    opt = LARS(model.parameters(), 0.3, 0.9, 1e-4, 0.005)
    delta = ((views + start).clamp(0, 1) - views).requires_grad_()
    with torch.no_grad():
        target = frozen.features(views, "pre")
    s, s_adv = model.features(views, "pre"), model.features(views + delta, "pre")
    cos = torch.nn.functional.cosine_similarity
    loss = -cos(s, target, dim=-1).mean() - 2.0 * cos(s_adv, s, dim=-1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    expected = (views + (delta + ALPHA * delta.grad.sign()).clamp(-EPS, EPS)).clamp(0, 1) - views
    for key, value in t.model.state_dict().items():
        torch.testing.assert_close(value.double(), model.state_dict()[key].double(), msg=key)
    torch.testing.assert_close(t.regime.adversary.delta.double(), expected)


def test_a_toy_run_logs_its_terms_records_its_teacher_and_resumes(tmp_path, tiny_data, teacher):
    t = student(tmp_path / "run", tiny_data, teacher, "--replays", "2")
    t.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(0 < r["cos_teacher"] <= 1 for r in rows)
    assert "invariance" not in rows[0]  # the method's loss is not the one minimised
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["config"]["teacher_identity"]
    teacher_ckpt = torch.load(teacher, weights_only=False)
    assert saved["train_seconds"] == pytest.approx(teacher_ckpt["train_seconds"]) and len(saved["sha1"]) == 40
    again = student(tmp_path / "run", tiny_data, teacher, "--replays", "2", "--resume", "auto")
    assert again.epoch == 2 and again.cfg["teacher_identity"] == saved

    changed = tmp_path / "other-teacher.pt"
    teacher_ckpt["train_seconds"] += 1  # other bytes at the same place
    torch.save(teacher_ckpt, changed)
    with pytest.raises(UsageError, match="not the teacher this run started from"):
        student(tmp_path / "moved", tiny_data, changed, "--replays", "2", "--resume", str(tmp_path / "run"))


def test_a_student_needs_a_teacher_of_its_sizes(tmp_path, tiny_data, teacher):
    with pytest.raises(UsageError, match="--teacher PATH is required"):
        student(tmp_path / "a", tiny_data, "")
    with pytest.raises(UsageError, match="--width 8"):
        student(tmp_path / "b", tiny_data, teacher, "--width", "4")
    assert student(tmp_path / "c", tiny_data, teacher, "--width", "4", "--student-init", "random").cfg["width"] == 4


def test_a_distilled_rows_cost_counts_its_teachers_minutes():
    from utils.evaluation.results import training_seconds

    student_only = {"train_seconds": 120.0, "train_config": {}}
    distilled = {"train_seconds": 120.0, "train_config": {"teacher_identity": {"train_seconds": 60.0}}}
    assert training_seconds(student_only) == 120.0 and training_seconds(distilled) == 180.0
    assert training_seconds({"train_seconds": None}) is None


@pytest.mark.parametrize("replays,alias", [("1", "m=1 (ours)"), ("2", "m=2 (ours)"), ("3", None)])
def test_a_distilled_run_is_named_by_the_project_row_with_its_replays(replays, alias):
    from utils.report import model_name

    argv = ["--batch-size", "50", "--replays", replays, "--teacher", "teacher.pt"]
    name = model_name({"train_config": parse_config("empssl", "distill", None, argv)[0]})
    assert f"m={replays} free" in name and (name.endswith(alias) if alias else " = " not in name)


@pytest.mark.parametrize("method,regime,flags,why", [
    ("empssl", "distill", ["--clean-weight", "1"], "the distill regime minimises a loss of its own"),
    ("empssl", "distill", ["--attack-gain"], "the distill regime minimises a loss of its own"),
    ("empssl", "distill", ["--invariance", "ntxent"], "the distill regime minimises a loss of its own"),
    ("empssl", "standard", ["--clean-weight", "1"], "it needs an adversarial regime"),
    ("simclr", "free", ["--anchor", "clean"], "it is an EMP-SSL switch"),
    ("empssl", "free", ["--attack-bn", "eval"], "it switches a part of PGD training"),
])
def test_a_switch_where_it_does_not_apply_is_one_line_naming_it(capsys, method, regime, flags, why):
    with pytest.raises(SystemExit) as exit_:
        parse_config(method, regime, None, flags)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1
    assert f"error: {flags[0]} does not apply to" in lines[0] and why in lines[0]
