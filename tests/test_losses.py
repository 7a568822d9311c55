import math

import pytest
import torch
import torch.nn.functional as F

from losses import empssl_loss, invariance, multiview_nt_xent, nt_xent, total_coding_rate


def naive_tcr(z, eps):
    """The d x d form of the original code, per view, in float64."""
    out = []
    for zv in z.double():
        m, d = zv.shape
        out.append(0.5 * torch.logdet(torch.eye(d, dtype=torch.float64) + d / (m * eps) * zv.T @ zv))
    return torch.stack(out)


def test_tcr_gram_form_equals_naive_logdet_values_and_gradients():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(16, 100, 1024), dim=-1)
    za = z.clone().requires_grad_(True)
    zb = z.double().requires_grad_(True)
    ours, ref = total_coding_rate(za, 0.2), naive_tcr(zb, 0.2)
    assert ours.shape == (16,) and ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=0)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(za.grad.double(), zb.grad, rtol=1e-4, atol=1e-6)


def test_tcr_finite_on_rank_deficient_batch_and_closed_form():
    m, d, eps = 50, 256, 0.2
    v = F.normalize(torch.randn(d), dim=0)
    z = v.expand(2, m, d).clone().requires_grad_(True)
    value = total_coding_rate(z, eps)
    # All rows equal a unit vector: Z^T Z = m v v^T has one eigenvalue m, so TCR = 1/2 log(1 + d/eps).
    torch.testing.assert_close(value, torch.full((2,), 0.5 * math.log(1 + d / eps)), rtol=1e-4, atol=0)
    value.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_tcr_float32_under_autocast():
    z = F.normalize(torch.randn(3, 20, 64), dim=-1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = total_coding_rate(z)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), naive_tcr(z.float(), 0.2), rtol=1e-4, atol=0)


def naive_nt_xent(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n, b = len(z), len(z1)
    total = 0.0
    for a in range(n):
        pos = (a + b) % n
        sims = [float(z[a] @ z[k]) / t for k in range(n) if k != a]
        total += -(float(z[a] @ z[pos]) / t - math.log(sum(math.exp(s) for s in sims)))
    return total / n


@pytest.mark.parametrize("t", [0.07, 0.5])
def test_nt_xent_equals_naive_loop(t):
    torch.manual_seed(1)
    z1, z2 = torch.randn(6, 16), torch.randn(6, 16)
    assert nt_xent(z1, z2, t).item() == pytest.approx(naive_nt_xent(z1, z2, t), rel=1e-5)


def naive_multiview_nt_xent(z, t):
    """Each anchor against each of its positives, one by one, in float64."""
    v, b, _ = z.shape
    flat = F.normalize(z.reshape(v * b, -1).double(), dim=1)
    terms = []
    for a in range(v * b):
        others = [k for k in range(v * b) if k != a]
        log_denominator = math.log(sum(math.exp(float(flat[a] @ flat[k]) / t) for k in others))
        terms += [log_denominator - float(flat[a] @ flat[p]) / t for p in others if p % b == a % b]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("views", [3, 5])
def test_multiview_nt_xent_equals_naive_loop_and_is_nt_xent_for_two_views(views):
    torch.manual_seed(2)
    z = torch.randn(views, 4, 8)
    assert multiview_nt_xent(z, 0.2).item() == pytest.approx(naive_multiview_nt_xent(z, 0.2), rel=1e-5)
    pair = torch.randn(2, 6, 16)
    assert multiview_nt_xent(pair, 0.07).item() == pytest.approx(nt_xent(pair[0], pair[1], 0.07).item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert multiview_nt_xent(z.bfloat16(), 0.2).dtype == torch.float32


def test_nt_xent_closed_forms():
    b, t = 4, 0.5
    eye = torch.eye(8)[:b]
    # Identical views, mutually orthogonal images: positive sim 1, the 2B-2 negatives sim 0.
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (2 * b - 2)))
    assert nt_xent(eye, eye, t).item() == pytest.approx(expected, rel=1e-6)
    # Every embedding orthogonal to every other: all 2B-1 candidates tie.
    assert nt_xent(torch.eye(8)[:b], torch.eye(8)[b:], t).item() == pytest.approx(math.log(2 * b - 1), rel=1e-6)


def test_invariance_naive_and_closed_form():
    torch.manual_seed(2)
    z = torch.randn(5, 7, 12)
    zbar = z.mean(0)
    naive = sum(float(F.cosine_similarity(z[v, i], zbar[i], dim=0)) for v in range(5) for i in range(7)) / 35
    assert invariance(z).item() == pytest.approx(naive, rel=1e-5)
    same = F.normalize(torch.randn(1, 7, 12), dim=-1).expand(5, 7, 12)
    assert invariance(same).item() == pytest.approx(1.0, abs=1e-6)


def test_empssl_loss_combines_terms_with_coefficients():
    torch.manual_seed(3)
    z = F.normalize(torch.randn(4, 10, 32), dim=-1)
    loss, terms = empssl_loss(z, inv_coef=200, tcr_coef=1, tcr_eps=0.2)
    expected = -200 * invariance(z) - total_coding_rate(z, 0.2).mean()
    torch.testing.assert_close(loss, expected)
    assert set(terms) == {"invariance", "tcr"}
    loss2, _ = empssl_loss(z, inv_coef=0, tcr_coef=2)
    torch.testing.assert_close(loss2, -2 * total_coding_rate(z, 0.2).mean())


def test_invariance_to_the_anchor_views_is_the_naive_mean_cosine():
    z = torch.randn(5, 4, 6)
    anchor = z[:2].mean(0)
    naive = sum(float(torch.dot(z[v, i], anchor[i]) / (z[v, i].norm() * anchor[i].norm()))
                for v in range(5) for i in range(4)) / 20
    assert abs(float(invariance(z, anchors=2)) - naive) < 1e-5
    assert abs(float(invariance(z, anchors=2)) - float(invariance(z))) > 1e-3
