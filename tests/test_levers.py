"""The levers of the adversarial-SSL literature: weak views, annealed views, the free step equal to the radius, the
weight average, and the screening evaluation; each against an independent oracle or a closed form."""
import json

import pytest
import torch
from pyautoattack import AutoAttack
from test_evaluate import linear_model_and_data
from test_reliability import one_line_error, usage_error

from attacks import autoattack_cascade
from augment import WEAK_SCALE, at_strength, augment_config
from experiments.levers import LEVERS
from experiments.scales import SCALES
from utils.core.checkpoint import load_checkpoint
from utils.engine.blocks import augment_for
from utils.engine.config import parse_config
from utils.engine.ema import WeightAverage
from utils.engine.train import view_strength
from utils.evaluation.evaluate import evaluate, load_encoder
from utils.levers import job_of
from utils.reproduce import Row, train_argv

from conftest import run_script, tiny_trainer

BOXES = ("top", "left", "height", "width")
COLOUR = ("jitter", "grayscale", "blur", "solarize")


def params(augment, batch=50, seed=0):
    return augment.sample_params(batch, "cpu", generator=torch.Generator().manual_seed(seed))


def test_weak_views_are_the_weak_pipelines_views_and_leave_the_others_alone():
    weak, plain = augment_for(16, "empssl", "crop", weak_views=4), augment_for(16, "empssl", "crop")
    colourless = augment_for(16, "empssl", "crop", scale=WEAK_SCALE, jitter_p=0, grayscale_p=0, blur_p=0,
                             solarize_p=0)
    p, q, r = params(weak), params(plain), params(colourless)
    first = 12 * 50
    for name in (*BOXES, "flip", *COLOUR, "brightness", "hue", "sigma"):
        assert torch.equal(getattr(p, name)[:first], getattr(q, name)[:first]), name
    for name in (*BOXES, "flip"):  # the same uniforms, cut at the weak scale
        assert torch.equal(getattr(p, name)[first:], getattr(r, name)[first:]), name
    for name in COLOUR:
        assert not getattr(p, name)[first:].any(), name
    area = (p.height * p.width)[first:].double() / 32 ** 2
    assert area.min() >= 0.7 and q.jitter[first:].any()


def test_weak_views_bounds():
    with pytest.raises(ValueError, match="weak_views must be in"):
        augment_for(4, "empssl", "crop", weak_views=5)


def test_strength_scales_every_probability_and_magnitude_and_moves_the_crop_toward_the_image():
    cfg = augment_config(16, "crop", jitter=(0.4, 0.4, 0.4, 0.2), blur_p=0.1, solarize_p=0.1)
    assert at_strength(cfg, 1) is cfg
    half = at_strength(cfg, 0.5)
    assert half.scale == pytest.approx((0.54, 1.0)) and half.jitter == pytest.approx((0.2, 0.2, 0.2, 0.1))
    assert (half.jitter_p, half.grayscale_p, half.blur_p, half.solarize_p) == pytest.approx((0.4, 0.1, 0.05, 0.05))
    assert (half.flip_p, half.ratio, half.blur_sigma) == (cfg.flip_p, cfg.ratio, cfg.blur_sigma)
    patch = at_strength(augment_config(16, "patch"), 0.5)
    assert patch.scale == pytest.approx((0.625, 0.625))
    with pytest.raises(ValueError, match="strength must be in"):
        at_strength(cfg, 1.5)


def test_strength_zero_views_are_the_image_or_its_mirror():
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    augment = augment_for(4, "empssl", "crop")
    views = augment(x, generator=torch.Generator().manual_seed(3), strength=0)
    image = x.float().div(255).repeat(4, 1, 1, 1)
    mirrored = torch.flip(image, dims=[3])
    same = (views - image).abs().amax(dim=(1, 2, 3)) < 1e-6
    flipped = (views - mirrored).abs().amax(dim=(1, 2, 3)) < 1e-6
    assert bool((same | flipped).all()) and same.any() and flipped.any()


def test_weight_average_follows_the_naive_formula_and_copies_counts():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ema = WeightAverage(model, 0.8)
    naive = {k: v.clone().double() for k, v in model.state_dict().items() if v.is_floating_point()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for t in range(30):
        optimizer.zero_grad()
        (model(torch.randn(8, 4)) - 1).pow(2).mean().backward()
        optimizer.step()
        ema.update()
        rate = min(0.8, (1 + t) / (10 + t))
        for k in naive:
            naive[k] = rate * naive[k] + (1 - rate) * model.state_dict()[k].double()
    for k, v in naive.items():
        assert torch.allclose(ema.average[k].double(), v, atol=1e-6), k
    assert ema.average["1.num_batches_tracked"] == 30 and ema.updates == 30
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(model, 1.0)


def trainer(out, data, *extra):
    return tiny_trainer(out, data, "empssl", "free", "--replays", 2, *extra, defaults={"epochs": 2, "batch_size": 16})


LEVER_FLAGS = ("--ema-decay", "0.9", "--weak-views", "1", "--view-strength-end", "0.25", "--alpha", "eps")


def test_levers_train_save_their_average_and_resume_bit_identically(tmp_path, tiny_data):
    full = trainer(tmp_path / "a", tiny_data, *LEVER_FLAGS, "--save-every", "1")
    assert full.cfg["alpha"] == full.cfg["eps"] == 8 / 255
    assert [view_strength(full.cfg, step, 8) for step in (0, 4, 8)] == [1, 0.625, 0.25]
    full.run()
    resumed = trainer(tmp_path / "b", tiny_data, "--resume", tmp_path / "a" / "epoch_0001.pt")
    resumed.run()
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["ema"]["updates"] == a["step"] == 8 and b["ema"]["updates"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["ema"]["weights"][k], b["ema"]["weights"][k]), k
    assert any(not torch.equal(a["model"][k], a["ema"]["weights"][k]) for k in a["model"])
    encoder, _ = load_encoder(tmp_path / "a" / "last.pt", "empssl", "ema")
    assert all(torch.equal(v, a["ema"]["weights"][k]) for k, v in encoder.state_dict().items())


def test_no_lever_trains_as_before(tmp_path, tiny_data):
    """Every lever at its neutral value: the weights of a run without the flags, bit for bit."""
    neutral = trainer(tmp_path / "a", tiny_data, "--ema-decay", "0", "--weak-views", "0", "--view-strength-end", "1",
                      "--alpha", "0.01")
    neutral.run()  # each run right after its trainer is built: both draw from the global generator
    plain = trainer(tmp_path / "b", tiny_data)
    plain.run()
    assert neutral.ema.state_dict() is None and load_checkpoint(tmp_path / "a" / "last.pt")["ema"] is None
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, neutral.model.state_dict()[k]), k


@pytest.mark.parametrize("flags,message", [
    (("--view-strength-end", "1.5"), "--view-strength-end: '1.5' is above 1"),
    (("--ema-decay", "1"), "--ema-decay: '1' is not below 1"),
    (("--weak-views", "5"), "--weak-views 5 is more than the 4 views"),
])
def test_a_lever_out_of_range_is_one_line_before_any_work(tmp_path, tiny_data, flags, message):
    proc = run_script("main_empssl_free_adv.py", "--data-dir", tiny_data, "--num-views", "4", "--out-dir",
                      tmp_path / "run", *flags, check=False)
    assert message in one_line_error(proc) and not (tmp_path / "run").exists()


def test_weights_ema_of_a_run_without_an_average_is_refused(script_run):
    run = script_run("empssl", "free")[0]
    assert "holds no moving average" in usage_error(evaluate, "empssl", ["--checkpoint", str(run / "last.pt"),
                                                                          "--device", "cpu", "--weights", "ema"])


def test_the_screen_runs_autoattacks_first_two_attacks_with_untouched_settings(monkeypatch):
    seen = []

    def record(self, x, y, *, batch_size=250, state_path=None):
        seen.append((list(self.attacks_to_run), self.apgd.n_iter, self.apgd_targeted.n_target_classes))
        return x, torch.where(torch.arange(len(x)) % 2 == 0, y, (y + 1) % 10)

    monkeypatch.setattr(AutoAttack, "run_standard_evaluation", record)
    model, x, y = linear_model_and_data(16)
    _, accuracy, _, _ = autoattack_cascade(model, x.float() / 255, y, 8 / 255, 3, 250, "cpu",
                                           attacks=("apgd-ce", "apgd-t"))
    assert seen == [(["apgd-ce"], 100, 9), (["apgd-t"], 100, 9)] and list(accuracy.values()) == [100, 50, 25]
    with pytest.raises(ValueError, match="must lead standard AutoAttack"):
        autoattack_cascade(model, x.float() / 255, y, 8 / 255, 3, 250, "cpu", attacks=("square",))


def test_a_screened_evaluation_of_the_average_has_its_own_file_and_fields(tmp_path, tiny_data, cheap_autoattack):
    run = trainer(tmp_path / "run", tiny_data, "--ema-decay", "0.9", "--epochs", "1").run()
    common = ["--checkpoint", str(run / "last.pt"), "--device", "cpu", "--subset-train", "32", "--subset-test", "12",
              "--finetune-epochs", "1", "--pgd-steps", "1", "--eps", "8/255", "--autoattack-samples", "10"]
    screened = evaluate("empssl", [*common, "--screen", "--weights", "ema"])
    path = run / "eval-slf-pre-v1-last-ema-screen.json"
    assert screened == json.loads(path.read_text()) and screened["weights"] == "ema"
    assert "autoattack" not in screened and list(screened["screen_breakdown"]["8/255"]) == [
        "clean", "apgd-ce", "apgd-t", "seconds"]
    plain = evaluate("empssl", common)
    assert plain["weights"] == "model" and (run / "eval-slf-pre-v1-last.json").is_file()
    heads = [load_checkpoint(path.with_suffix(".pt"))["head"]["weight"] for path in
             (run / "eval-slf-pre-v1-last.json", run / "eval-slf-pre-v1-last-ema-screen.json")]
    assert not torch.equal(*heads)  # fitted on the features of other weights
    proc = run_script("evaluate_empssl.py", *common, "--screen", "--autoattack", check=False)
    assert "not allowed with argument" in one_line_error(proc)


def test_each_lever_is_cf_amc_ssls_row_plus_its_flags_and_is_screened(tmp_path):
    args = type("Args", (), {"scale": "medium", "out": str(tmp_path), "data": "imagefolder", "data_dir": "DATA",
                             "device": "cpu", "seed": 0, "image_size": None, "view_size": None})()
    base = train_argv(Row("empssl", "free", "crop"), SCALES["medium"], args)
    for lever in LEVERS:
        job = job_of(lever, args)
        assert job.train == [arg.replace("crop-empssl-free", f"crop-empssl-free-{lever.name}") for arg in base] + list(
            lever.flags)
        cfg = parse_config("empssl", "free", None, job.train)[0]
        assert (cfg["ema_decay"] > 0) == lever.ema == ("screen-ema" in job.evaluations)
        for name, flags in job.evaluations.items():
            assert "--screen" in flags and "--autoattack" not in flags and "500" in flags
            assert job.result(name) == f"eval-slf-pre-v1-last{'-ema' if name == 'screen-ema' else ''}-screen.json"
