import pytest
import torch
import torch.nn.functional as F

from utils.core.checkpoint import load_checkpoint
from utils.core.data import load_dataset
from utils.engine.blocks import encoder_for
from utils.engine.encoders import load_encoder
from utils.tsne import attack_features, method_of, tsne

from conftest import run_script


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_data):
    """A tiny EMP-SSL encoder trained for one epoch by the real script, so its format is the real one."""
    out = tmp_path_factory.mktemp("tsne-run")
    run_script("main_empssl.py", "--data", "cifar10", "--data-dir", tiny_data, "--width", "8", "--hidden-dim", "32",
               "--batch-size", "16", "--epochs", "1", "--device", "cpu", "--channels-last", "off", "--out-dir", out)
    return out / "last.pt"


@pytest.fixture(scope="module")
def encoder_and_images(checkpoint, tiny_data):
    encoder, _ = load_encoder(checkpoint, "empssl")
    images, _ = load_dataset("cifar10", tiny_data, train=False)
    return encoder, images[:12]


def test_attack_moves_features_and_a_zero_step_start_free_attack_does_not(encoder_and_images):
    encoder, images = encoder_and_images
    clean, adv = attack_features(encoder, images, 8 / 255, 2, batch_size=5,
                                 generator=torch.Generator().manual_seed(0))
    assert clean.shape == adv.shape == (12, 32)
    assert F.cosine_similarity(clean, adv, dim=1).max() < 1 - 1e-4
    with torch.no_grad():
        direct = encoder.features(images.float() / 255)  # all 12 at once, the encoder in eval mode
    torch.testing.assert_close(clean, direct)
    _, adv0 = attack_features(encoder, images, 8 / 255, 0, batch_size=5, random_start=False)
    torch.testing.assert_close(adv0, direct)


def test_attack_climbs_the_distance_it_maximises(encoder_and_images):
    encoder, images = encoder_and_images

    def distance(steps):
        clean, adv = attack_features(encoder, images, 8 / 255, steps, generator=torch.Generator().manual_seed(0))
        return (F.normalize(adv, dim=1) - F.normalize(clean, dim=1)).pow(2).sum(1).mean()

    assert distance(5) > 1.5 * distance(0)  # beyond what the random start alone gives


def test_tool_writes_a_png_named_by_every_setting_and_another_setting_never_overwrites_it(checkpoint, capsys):
    out = tsne([str(checkpoint), "--n", "40", "--steps", "2", "--device", "cpu"])
    assert out == checkpoint.parent / "tsne-cifar10-pre-eps8-255-pgd2-n40-lines100-seed0.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "PGD-2 at eps 8/255" in printed and "(40 test images)" in printed
    picture = out.read_bytes()
    other = tsne([str(checkpoint), "--n", "40", "--steps", "2", "--device", "cpu", "--lines", "5"])
    assert other.name == "tsne-cifar10-pre-eps8-255-pgd2-n40-lines5-seed0.png" and out.read_bytes() == picture


def test_report_draws_it_too(checkpoint, tmp_path):
    from utils.report import report

    out = report(["--tsne", str(checkpoint), "--n", "20", "--steps", "1", "--device", "cpu",
                  "--out", str(tmp_path / "t.png")])
    assert out == tmp_path / "t.png" and out.stat().st_size > 10_000


def test_bare_state_dict_gets_its_method_from_the_projection(checkpoint, tiny_data, tmp_path, capsys):
    bare = tmp_path / "original.pt"
    torch.save({f"module.{k}": v for k, v in load_checkpoint(checkpoint)["model"].items()}, bare)
    out = tsne([str(bare), "--n", "20", "--steps", "1", "--features", "backbone", "--eps", "4/255",
                "--data-dir", str(tiny_data), "--device", "cpu", "--out", str(tmp_path / "pics" / "t.png")])
    assert out == tmp_path / "pics" / "t.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "backbone features" in capsys.readouterr().out
    assert method_of(load_checkpoint(bare), bare) == "empssl"
    torch.save(encoder_for("simclr", width=8, hidden_dim=32).state_dict(), tmp_path / "simclr.pt")
    assert method_of(load_checkpoint(tmp_path / "simclr.pt"), tmp_path / "simclr.pt") == "simclr"


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    proc = run_script("-m", "utils.tsne", tmp_path / "none.pt", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no checkpoint at" in proc.stderr
