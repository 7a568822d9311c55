import copy
import math

import pytest
import torch

from benchmarks import bench_knn
from utils.core.data import load_dataset
from utils.engine.blocks import encoder_for
from utils.engine.knn import KNNMonitor, knn_accuracy, knn_predict

from conftest import write_cifar10


def oracle(train, train_labels, test, num_classes, k, temperature):
    """Weighted kNN by explicit loops in float64; also whether every row is clear of ties, where float32
    and float64 could legitimately disagree (the k-th and (k+1)-th neighbour, or the two best classes)."""
    predictions, tie_free = [], True
    for t in test.double().tolist():
        sims = []
        for j, f in enumerate(train.double().tolist()):
            dot = sum(a * b for a, b in zip(t, f))
            sims.append((dot / math.sqrt(sum(a * a for a in t) * sum(b * b for b in f)), j))
        sims.sort(reverse=True)
        votes = [0.0] * num_classes
        for sim, j in sims[:k]:
            votes[int(train_labels[j])] += math.exp(sim / temperature)
        best, second = sorted(votes, reverse=True)[:2]
        tie_free &= best - second > 1e-4 * best and (k >= len(sims) or sims[k - 1][0] - sims[k][0] > 1e-5)
        predictions.append(votes.index(best))
    return torch.tensor(predictions), tie_free


@pytest.mark.parametrize("n, m, d, classes, k, temperature, chunk", [
    (60, 25, 8, 4, 5, 0.07, 7),      # several chunks, the last one short
    (80, 30, 16, 10, 20, 0.07, 1024),
    (50, 20, 4, 3, 10, 0.5, 3),
    (6, 10, 8, 3, 20, 0.07, 4),      # k > N: every training row votes
])
def test_knn_predict_equals_loop_oracle(n, m, d, classes, k, temperature, chunk):
    g = torch.Generator().manual_seed(n + m)
    train, test = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    expected, tie_free = oracle(train, labels, test, classes, k, temperature)
    assert tie_free  # otherwise this seed cannot tell a right answer from a rounding accident
    got = knn_predict(train, labels, test, classes, k=k, temperature=temperature, chunk=chunk)
    assert got.dtype == torch.int64 and got.shape == (m,)
    assert torch.equal(got, expected)


def test_feature_scale_does_not_matter_but_direction_does():
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(40, 8, generator=g), torch.randn(15, 8, generator=g)
    labels = torch.randint(0, 5, (40,), generator=g)
    scale = torch.rand(40, 1, generator=g) * 100 + 0.01
    assert torch.equal(knn_predict(train * scale, labels, test * 3, 5), knn_predict(train, labels, test, 5))
    flipped = train.clone()
    flipped[:20] *= -1  # same lengths, half the directions reversed: the oracle's answer moves, and so must ours
    expected, tie_free = oracle(flipped, labels, test, 5, 20, 0.07)
    assert tie_free and not torch.equal(expected, knn_predict(train, labels, test, 5))
    assert torch.equal(knn_predict(flipped, labels, test, 5), expected)


def test_bf16_features_give_the_float32_answer_for_their_values():
    # Near-identical directions: a bf16 similarity (about 3 digits) would reorder the neighbours.
    g = torch.Generator().manual_seed(2)
    centre = torch.randn(1, 64, generator=g)
    train = (centre + 0.02 * torch.randn(400, 64, generator=g)).bfloat16()
    test = (centre + 0.02 * torch.randn(200, 64, generator=g)).bfloat16()
    labels = torch.randint(0, 10, (400,), generator=g)
    assert torch.equal(knn_predict(train, labels, test, 10), knn_predict(train.float(), labels, test.float(), 10))


def test_separated_clusters_are_classified_perfectly():
    g = torch.Generator().manual_seed(3)
    centres = 5 * torch.eye(16)[:6]
    train_y, test_y = torch.randint(0, 6, (300,), generator=g), torch.randint(0, 6, (100,), generator=g)
    train = centres[train_y] + 0.3 * torch.randn(300, 16, generator=g)
    test = centres[test_y] + 0.3 * torch.randn(100, 16, generator=g)
    assert knn_accuracy(train, train_y, test, test_y, 6, chunk=33) == 100.0
    assert knn_accuracy(train, train_y, test, (test_y + 1) % 6, 6) == 0.0


@pytest.fixture(scope="module")
def coloured(tmp_path_factory):
    """Noisy images, one colour per class: train and test splits of 200 and 60."""
    root = write_cifar10(tmp_path_factory.mktemp("knn"), n_train=200, n_test=60)
    return load_dataset("cifar10", root, train=True) + load_dataset("cifar10", root, train=False)


def test_monitor_changes_neither_rng_nor_modes_nor_batchnorm(coloured):
    torch.manual_seed(0)
    encoder = encoder_for("empssl", width=8, hidden_dim=32)
    encoder.backbone.bn1.eval()  # a frozen BatchNorm inside a training model must stay frozen
    buffers = {k: v.clone() for k, v in encoder.state_dict().items()}
    modes = [m.training for m in encoder.modules()]
    monitor = KNNMonitor(*coloured, n_train=100, n_test=30, batch_size=32)
    rng = torch.get_rng_state()

    def draws(x):  # a feature function that samples, as test-time augmentation would
        return encoder.features(x + 0 * torch.rand(1))

    accuracy = monitor.monitor(draws, "cpu", model=encoder)
    eval_copy = copy.deepcopy(encoder).eval()
    with torch.no_grad():  # the same kNN on features computed here, all at once, in eval mode
        train, test = (eval_copy.features(x.float() / 255) for x in (monitor.train_images, monitor.test_images))
    assert accuracy == pytest.approx(knn_accuracy(train, monitor.train_labels, test, monitor.test_labels, 10), abs=1e-4)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in encoder.modules()] == modes
    assert all(torch.equal(v, buffers[k]) for k, v in encoder.state_dict().items())


def test_monitor_clips_subsets_to_the_splits(coloured):
    monitor = KNNMonitor(*coloured)  # defaults of 10,000 / 2,000 images, more than there are
    assert len(monitor.train_images) == 200 and len(monitor.test_images) == 60


def test_monitor_needs_to_know_the_model_of_a_plain_function(coloured):
    encoder = encoder_for("empssl", width=8, hidden_dim=32)
    monitor = KNNMonitor(*coloured, n_train=20, n_test=10)
    with pytest.raises(TypeError, match="model="):
        monitor.monitor(lambda x: encoder.features(x), "cpu")


def test_monitor_subsets_are_stratified_and_a_random_encoder_beats_chance(coloured):
    torch.manual_seed(0)
    encoder = encoder_for("empssl", width=8, hidden_dim=32)
    monitor = KNNMonitor(*coloured, n_train=100, n_test=30, batch_size=40)
    for picked, labels, n in ((monitor.train_labels, coloured[1], 100), (monitor.test_labels, coloured[3], 30)):
        counts, available = torch.bincount(picked, minlength=10), torch.bincount(labels, minlength=10)
        assert counts.sum() == n and ((counts - n * available / len(labels)).abs() < 1).all()
    assert monitor.monitor(encoder.features, "cpu") > 50  # chance is 10%: colour survives a random encoder


def test_bench_knn_runs(capsys):
    bench_knn.main(["--scripts", "main_simclr", "main_empssl_free_adv", "--width", "4", "--hidden-dim", "16",
                    "--knn-train", "100", "--knn-test", "20", "--steps", "1", "--batch-size", "4", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "kNN monitor (100 train / 20 test images)" in out and "main_empssl_free_adv" in out and "%" in out


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_same_predictions_and_cuda_rng_untouched(coloured):
    g = torch.Generator().manual_seed(4)
    train, test = torch.randn(300, 32, generator=g), torch.randn(100, 32, generator=g)
    labels = torch.randint(0, 10, (300,), generator=g)
    on_cuda = knn_predict(train.cuda(), labels.cuda(), test.cuda(), 10)
    assert torch.equal(on_cuda.cpu(), knn_predict(train, labels, test, 10))
    encoder = encoder_for("empssl", width=8, hidden_dim=32).cuda()
    rng = torch.cuda.get_rng_state()
    KNNMonitor(*coloured, n_train=100, n_test=30).monitor(
        lambda x: encoder.features(x + 0 * torch.rand(1, device="cuda")), "cuda", model=encoder)
    assert torch.equal(torch.cuda.get_rng_state(), rng)
