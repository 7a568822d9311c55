"""The training step's GPU path, checked where it can be on the CPU: no host read in the step, the optimizer
leaves gradients alone, cuDNN autotuning; and on CUDA, a step that never waits for the GPU."""
import pytest
import torch

import augment.multiview as multiview
from utils.engine.optim import LARS
from utils.engine.train import enable_cudnn_autotuning

from conftest import tiny_trainer

HOST_READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__")


def free_trainer(out, data, *extra):
    return tiny_trainer(out, data, "empssl", "free", *extra, defaults={"epochs": 1, "batch_size": 16})


@pytest.mark.parametrize("extra", [(), ("--precision", "bf16", "--channels-last", "on")])
def test_a_training_step_reads_nothing_back_to_the_host(tmp_path, tiny_data, monkeypatch, extra):
    """On a GPU each of these would wait for the device; a training step uses none. Reads inside torch's own C++
    (an operator whose output size depends on values) are beyond a CPU's reach: the CUDA test below catches them."""
    t = free_trainer(tmp_path, tiny_data, "--log-every", "100", *extra)
    t.train_step(t.images[:16])  # optimizer state exists before the checked step
    monkeypatch.setitem(multiview._GATHER_MASKED_VIEWS, "cpu", False)  # the masked views as on a GPU
    for name in HOST_READS:
        def refuse(*args, _name=name, **kwargs):
            raise AssertionError(f"Tensor.{_name} in the training step: a host sync on a GPU")
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for name in ("nonzero", "masked_select", "unique"):  # their output's size is known only on the device
        monkeypatch.setattr(torch, name, lambda *a, _name=name, **k: pytest.fail(f"torch.{_name} in the training step"))
    monkeypatch.setattr(torch.Tensor, "unique", lambda *a, **k: pytest.fail("Tensor.unique in the training step"))
    index = torch.Tensor.__getitem__

    def no_mask_index(self, key):
        keys = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, torch.Tensor) and k.dtype == torch.bool for k in keys):
            pytest.fail("a boolean-mask index in the training step: its size is known only on the device")
        return index(self, key)

    monkeypatch.setattr(torch.Tensor, "__getitem__", no_mask_index)
    loss, terms = t.train_step(t.images[16:32])
    values = torch.stack([loss.detach().float(), *terms])
    monkeypatch.undo()
    assert torch.isfinite(values).all()


def test_lars_leaves_the_gradients_unchanged():
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 3))
    opt = LARS(model.parameters())
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(8, 6)).pow(2).sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_cudnn_autotuning_is_switched_on_for_cuda_training(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    enable_cudnn_autotuning()
    assert torch.backends.cudnn.benchmark


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_a_free_step_and_the_guard_never_wait_for_the_gpu(tmp_path, tiny_data):
    t = free_trainer(tmp_path, tiny_data, "--device", "cuda", "--log-every", "100")
    index = torch.arange(16, device=t.device)
    t.train_step(t.images[index])
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss, terms = t.train_step(t.images[index + 16])
        torch.stack([loss.detach().float(), *terms])
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_channels_last_auto_is_chosen_once_by_a_probe_that_leaves_the_random_streams_alone(tmp_path, tiny_data,
                                                                                              monkeypatch):
    import utils.engine.train

    probes = []
    probe = utils.engine.train.layout_seconds
    monkeypatch.setattr(utils.engine.train, "layout_seconds", lambda *a: probes.append(1) or probe(*a))
    t = free_trainer(tmp_path / "auto", tiny_data, "--channels-last", "auto")
    assert len(probes) == 1 and t.cfg["channels_last"] in ("on", "off")
    assert t.channels_last == (t.cfg["channels_last"] == "on")
    pinned = free_trainer(tmp_path / "pinned", tiny_data, "--channels-last", t.cfg["channels_last"])
    for key, value in t.model.state_dict().items():
        assert torch.equal(value, pinned.model.state_dict()[key]), key
    assert len(probes) == 1  # a chosen layout (what a checkpoint's config holds) is not probed again
    state = torch.random.get_rng_state()  # the run reseeds after the probe, so its weights alone cannot tell
    assert utils.engine.train.resolve_channels_last({**t.cfg, "channels_last": "auto"}, t.device) in ("on", "off")
    assert torch.equal(torch.random.get_rng_state(), state) and len(probes) == 2


def test_below_its_least_width_the_cpu_trains_contiguous_without_a_probe(monkeypatch):
    import utils.engine.train
    from utils.core.errors import UsageError

    monkeypatch.setattr(utils.engine.train, "layout_seconds", lambda *a: pytest.fail("probed a layout it must not use"))
    cpu = torch.device("cpu")
    for width, view_size in ((4, 32), (8, 48), (8, 96)):
        cfg = {"width": width, "view_size": view_size}
        assert utils.engine.train.resolve_channels_last({**cfg, "channels_last": "auto"}, cpu) == "off"
        with pytest.raises(UsageError, match=f"--width {8 if view_size == 32 else 12} or more .* at {view_size}px"):
            utils.engine.train.resolve_channels_last({**cfg, "channels_last": "on"}, cpu)
    for width, view_size in ((8, 32), (12, 64), (16, 96)):
        cfg = {"width": width, "view_size": view_size, "channels_last": "on"}
        assert utils.engine.train.resolve_channels_last(cfg, cpu) == "on"


def test_the_layout_probe_leaves_gradients_random_streams_and_layout_as_they_were():
    from utils.engine.layout import layout_seconds

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    for x in (torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8, requires_grad=True)):
        state = torch.random.get_rng_state()
        seconds = layout_seconds(model, x, repeats=1)
        assert set(seconds) == {"off", "on"} and all(s > 0 for s in seconds.values())
        assert torch.equal(torch.random.get_rng_state(), state)
        assert x.grad is None and all(p.grad is None for p in model.parameters())
        assert all(p.is_contiguous() for p in model.parameters())
