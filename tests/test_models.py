import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from models import build_encoder
from utils.engine.blocks import encoder_for

from conftest import ROOT


def torchvision_cifar_resnet18():
    net = torchvision.models.resnet18()
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def test_backbone_matches_torchvision_names_shapes_and_loads_its_weights():
    ours = encoder_for("empssl").backbone
    ref = torchvision_cifar_resnet18()
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(our_sd) == list(ref_sd)
    assert all(our_sd[k].shape == ref_sd[k].shape for k in ref_sd)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == 11_168_832
    ours.load_state_dict(ref_sd)
    ours.eval(), ref.eval()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method,z_dim", [("empssl", 1024), ("simclr", 128)])
def test_encoder_shapes_and_normalised_embedding(method, z_dim):
    enc = encoder_for(method, width=8, hidden_dim=64)
    x = torch.rand(4, 3, 32, 32)
    z = enc(x)
    assert z.shape == (4, z_dim)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    assert enc.features(x, "pre").shape == (4, 64)
    assert enc.features(x, "backbone").shape == (4, 64)  # 8 * width
    assert [n for n, _ in enc.named_children()] == ["backbone", "pre_feature", "projection"]
    with pytest.raises(ValueError):
        enc.features(x, "nope")


def test_width_scales_channels():
    assert encoder_for("simclr", width=16, hidden_dim=32).backbone.layer4[1].conv2.out_channels == 128


def test_features_are_differentiable_from_the_image():
    enc = encoder_for("simclr", width=8, hidden_dim=32).eval()
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    enc.features(x, "backbone").sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_building_blocks_import_nothing_from_utils():
    """models, augment, attacks and losses take what a method declares as arguments; the registry stays in utils."""
    code = ("import sys, models, augment, attacks, losses; "
            "print(sorted(m for m in sys.modules if m == 'utils' or m.startswith('utils.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stdout.strip() == "[]"


def test_build_encoder_takes_the_embedding_size():
    assert build_encoder(48, width=4, hidden_dim=16).projection[-1].out_features == 48
