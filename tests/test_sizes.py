"""Beyond 32x32: STL-10's binary files, image folders at any size, the ImageNet stem, a run at 96x96 trained,
resumed and evaluated, and a transfer evaluation from one data set to another."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from models import build_encoder
from utils.core.data import UNLABELED, load_dataset, resize_images
from utils.core.errors import UsageError
from utils.engine.config import TIME_LIMIT_EXIT
from utils.engine.train import Trainer, parse_config
from utils.evaluation.evaluate import evaluate

from conftest import TINY


def write_stl10(root, n_train=40, n_test=30, n_unlabeled=20, seed=0):
    """STL-10's binary layout: uint8 images of 3 x 96 x 96, every channel stored column by column, labels 1..10.
    Returns the images (N, 3, 96, 96) and labels (0..9) of each split as written."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        labels = np.arange(n) % 10
        colours = rng.integers(0, 256, (10, 3))
        images = np.clip(colours[labels][:, :, None, None] + rng.normal(0, 30, (n, 3, 96, 96)), 0, 255).astype(np.uint8)
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        if split != "unlabeled":
            (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        written[split] = (torch.from_numpy(images), torch.from_numpy(labels))
    return written


@pytest.fixture(scope="module")
def stl10(tmp_path_factory):
    root = tmp_path_factory.mktemp("stl")
    return root, write_stl10(root)


def test_stl10_binary_files_read_as_written_with_the_unlabeled_images_after_the_labelled(stl10):
    root, written = stl10
    images, labels = load_dataset("stl10", root, train=False)
    assert torch.equal(images, written["test"][0]) and torch.equal(labels, written["test"][1])
    images, labels = load_dataset("stl10", root / "stl10_binary", train=True, unlabeled=True)
    assert torch.equal(images, torch.cat([written["train"][0], written["unlabeled"][0]]))
    assert torch.equal(labels[:40], written["train"][1]) and (labels[40:] == UNLABELED).all()
    assert len(load_dataset("stl10", root, train=True)[1]) == 40  # the probe's split: labelled only


def test_resized_images_are_pils_antialiased_bilinear_within_one_level(stl10):
    _, written = stl10
    originals = written["test"][0][:6]
    ours = resize_images(originals, 32)
    for img, small in zip(originals, ours):
        pil = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((32, 32), Image.BILINEAR)
        ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
        assert (small.int() - ref.int()).abs().max() <= 1
    assert resize_images(originals, 96) is originals


def test_missing_or_broken_stl10_files_are_one_line(tmp_path, stl10):
    with pytest.raises(UsageError, match="missing train_X.bin.*--download"):
        load_dataset("stl10", tmp_path, train=True)
    broken = tmp_path / "stl10_binary"
    broken.mkdir()
    (broken / "test_X.bin").write_bytes(b"\0" * 1000)
    (broken / "test_y.bin").write_bytes(b"\1")
    with pytest.raises(UsageError, match="not a whole number of 96x96 images"):
        load_dataset("stl10", tmp_path, train=False)


def write_folder(root, sizes):
    """An image folder with one image of each (width, height) in ``sizes`` per class and split."""
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for k, (w, h) in enumerate(sizes):
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / split / cls / f"{k}.png")
    return root


def test_an_image_folder_of_one_size_reads_as_stored_and_of_many_sizes_needs_image_size(tmp_path):
    same = write_folder(tmp_path / "same", [(64, 64), (64, 64)])
    images, labels = load_dataset("imagefolder", same, train=True)
    assert images.shape == (4, 3, 64, 64) and labels.tolist() == [0, 0, 1, 1]
    mixed = write_folder(tmp_path / "mixed", [(96, 96), (64, 64), (120, 80)])
    with pytest.raises(UsageError, match="pass --image-size N"):
        load_dataset("imagefolder", mixed, train=True)
    images, _ = load_dataset("imagefolder", mixed, train=True, image_size=48)
    assert images.shape == (6, 3, 48, 48) and (mixed / ".train-48px-uint8.npz").is_file()
    # the 120x80 image: its centre 80x80 square, resized by PIL's antialiased bilinear filter
    with Image.open(mixed / "train" / "cat" / "2.png") as im:
        ref = np.asarray(im.convert("RGB").crop((20, 0, 100, 80)).resize((48, 48), Image.BILINEAR))
    assert torch.equal(images[2], torch.from_numpy(ref.copy()).permute(2, 0, 1))
    again, _ = load_dataset("imagefolder", mixed, train=True, image_size=48)  # from the cache
    assert torch.equal(again, images)


def test_the_imagenet_stem_is_torchvisions_resnet18_by_name_shape_and_output():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    reference.fc = torch.nn.Identity()
    ours = build_encoder(128, width=64, hidden_dim=32, stem="imagenet").backbone
    theirs = {k: v for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.items()}
    ours.load_state_dict(theirs)
    x = torch.rand(2, 3, 96, 96)
    torch.testing.assert_close(ours.eval()(x), reference.eval()(x), atol=1e-5, rtol=1e-5)
    assert ours.layer1(ours.maxpool(ours.relu(ours.bn1(ours.conv1(x))))).shape == (2, 64, 24, 24)
    cifar = build_encoder(128, width=8, hidden_dim=32).backbone
    assert cifar.conv1.kernel_size == (3, 3) and not hasattr(cifar, "maxpool")


def stl10_run(out, root, *extra):
    argv = ["--data", "stl10", "--data-dir", str(root), "--out-dir", str(out), *TINY, "--width", "4",
            "--num-views", "2", "--knn-every", "1", "--knn-test", "20", *extra]
    cfg, given, _ = parse_config("empssl", "free", None, argv)
    return Trainer(cfg, given)


def test_a_96x96_run_takes_the_imagenet_stem_resumes_and_evaluates_at_its_size(tmp_path, stl10):
    root, _ = stl10
    t = stl10_run(tmp_path / "run", root, "--replays", "2", "--time-limit", "0.001")
    assert t.cfg["image_size"] == 96 and t.cfg["view_size"] == 96 and t.cfg["stem"] == "imagenet"
    assert len(t.images) == 60 and t.knn is not None and len(t.knn.train_labels) == 40  # kNN: labelled only
    with pytest.raises(SystemExit) as stopped:  # at the first read-back point, mid-epoch 1
        t.run()
    assert stopped.value.code == TIME_LIMIT_EXIT
    resumed = stl10_run(tmp_path / "run", root, "--replays", "2", "--resume", "auto")
    assert (resumed.epoch, resumed.step) == (0, t.step) and resumed.model.backbone.stem == "imagenet"
    torch.testing.assert_close(resumed.model.state_dict(), t.model.state_dict())
    resumed.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "knn" in rows[-1]
    result = evaluate("empssl", ["--checkpoint", str(tmp_path / "run"), "--finetune-epochs", "1", "--pgd-steps", "1",
                                 "--device", "cpu", "--eps", "8/255"])
    assert result["data"]["image_size"] == 96 and result["data"]["name"] == "stl10"
    assert result["trained_on"] == {"name": "stl10", "folder": root.name, "image_size": 96}
    assert (tmp_path / "run" / "eval-slf-pre-v1-last.json").is_file()


def test_view_size_and_stem_flags_override_and_small_views_are_refused(tmp_path, stl10):
    root, _ = stl10
    t = stl10_run(tmp_path / "a", root, "--image-size", "64", "--view-size", "32", "--stem", "imagenet",
                  "--no-unlabeled")
    assert (t.cfg["image_size"], t.cfg["view_size"], t.cfg["stem"]) == (64, 32, "imagenet")
    assert tuple(t.images.shape) == (40, 3, 64, 64) and t.augment.size == 32
    with pytest.raises(UsageError, match="--view-size 4 is too small"):
        stl10_run(tmp_path / "b", root, "--view-size", "4")


def test_a_cifar_encoder_transfers_to_stl10_at_32x32_under_its_own_result_name(tmp_path, tiny_data, stl10):
    root, _ = stl10
    argv = ["--data-dir", str(tiny_data), "--subset", "32", "--out-dir", str(tmp_path / "run"), *TINY, "--epochs", "1",
            "--num-views", "2", "--knn-every", "0"]
    cfg, given, _ = parse_config("empssl", "standard", None, argv)
    Trainer(cfg, given).run()
    result = evaluate("empssl", ["--checkpoint", str(tmp_path / "run"), "--data", "stl10", "--data-dir", str(root),
                                 "--finetune-epochs", "1", "--pgd-steps", "1", "--device", "cpu", "--eps", "8/255"])
    assert result["data"]["name"] == "stl10" and result["data"]["image_size"] == 32  # the size the encoder saw
    assert result["trained_on"]["name"] == "cifar10" and result["n_test"] == 30
    assert (tmp_path / "run" / "eval-slf-pre-v1-last-on-stl10-32px.json").is_file()
    assert not (tmp_path / "run" / "eval-slf-pre-v1-last.json").exists()


def test_a_row_on_other_image_sizes_keeps_the_papers_name_and_says_its_sizes():
    from experiments.labels import model_name

    def name(**sizes):
        return model_name({"method": "empssl", "regime": "free",
                           "train_config": {"preset": "crop", "num_views": 16, "epochs": 1, **sizes}})

    assert name() == "Crop-based EMP-SSL (16 crops, m=3 free, 1 epoch) = CF-AMC-SSL"
    assert name(image_size=32, view_size=32, stem="cifar") == name()
    assert name(image_size=64, view_size=64, stem="cifar") == (
        "Crop-based EMP-SSL (16 crops, m=3 free, 1 epoch, 64px images) = CF-AMC-SSL")
    assert name(image_size=96, view_size=64, stem="imagenet", data="stl10", unlabeled=False) == (
        "Crop-based EMP-SSL (16 crops, m=3 free, 1 epoch, 96px images, 64px views, imagenet stem, "
        "labelled images only) = CF-AMC-SSL")
    assert name(image_size=96, view_size=96, stem="imagenet", data="stl10", unlabeled=True).endswith(
        "(16 crops, m=3 free, 1 epoch, 96px images) = CF-AMC-SSL")
