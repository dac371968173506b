"""Each loss against values computed independently: by hand, or with plain Python loops over the
published definition (no torch ops shared with the implementation)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from noisekd import losses


def _softmax(v, tau=1.0):
    e = [math.exp(x / tau) for x in v]
    return [x / sum(e) for x in e]


def test_hinton_kd_by_hand():
    s, t, tau = [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], 2.0
    ps, pt = _softmax(s, tau), _softmax(t, tau)
    expected = tau**2 * sum(q * math.log(q / p) for p, q in zip(ps, pt))
    got = losses.hinton_kd(torch.tensor([s]), torch.tensor([t]), tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # reference: PyTorch's KL with batchmean reduction
    ref = F.kl_div(F.log_softmax(torch.tensor([s]) / tau, 1), F.softmax(torch.tensor([t]) / tau, 1), reduction="batchmean")
    assert got.item() == pytest.approx(tau**2 * ref.item(), rel=1e-6)


@pytest.mark.filterwarnings("ignore:reduction")
def test_hinton_kd_sums_over_classes_and_averages_over_the_batch():
    """Pins the public-library defect of averaging the KL over classes (divides by C)."""
    torch.manual_seed(0)
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    per_sample = [losses.hinton_kd(s[i : i + 1], t[i : i + 1], 4.0).item() for i in range(4)]
    assert losses.hinton_kd(s, t, 4.0).item() == pytest.approx(sum(per_sample) / 4, rel=1e-6)
    wrong = 16.0 * F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="mean").item()
    assert losses.hinton_kd(s, t, 4.0).item() == pytest.approx(10 * wrong, rel=1e-5)
    assert losses.hinton_kd(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-7)


def test_attention_transfer_by_hand():
    # one sample, 2 channels, 2x1 positions: map = mean_c(f^2) = [(1+9)/2, (4+0)/2] = [5, 2]
    fs = torch.tensor([[[[1.0], [2.0]], [[3.0], [0.0]]]])
    ft = torch.tensor([[[[0.0], [1.0]], [[2.0], [1.0]]]])  # map = [2, 1]
    qs = [5 / math.sqrt(29), 2 / math.sqrt(29)]
    qt = [2 / math.sqrt(5), 1 / math.sqrt(5)]
    expected = ((qs[0] - qt[0]) ** 2 + (qs[1] - qt[1]) ** 2) / 2  # mean over batch x positions
    assert losses.attention_transfer([fs], [ft]).item() == pytest.approx(expected, rel=1e-6)
    # summed over layer pairs; channel counts may differ between student and teacher
    ft_wide = torch.cat([ft, ft], dim=1)
    assert losses.attention_transfer([fs, fs], [ft_wide, ft]).item() == pytest.approx(2 * expected, rel=1e-6)


def test_similarity_preserving_by_loops():
    torch.manual_seed(1)
    fs, ft = torch.randn(3, 2, 2, 2), torch.randn(3, 4, 1, 2)
    b = 3

    def gram(f):
        rows = [f[i].flatten().tolist() for i in range(b)]
        g = [[sum(x * y for x, y in zip(rows[i], rows[j])) for j in range(b)] for i in range(b)]
        return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in g]

    gs, gt = gram(fs), gram(ft)
    expected = sum((gs[i][j] - gt[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2
    assert losses.similarity_preserving(fs, ft).item() == pytest.approx(expected, rel=1e-5)


def _huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def test_rkd_distance_by_loops():
    es = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 0.0]])
    et = torch.tensor([[1.0, 1.0], [1.0, 2.0], [4.0, 1.0]])

    def normalised(e):
        pts = e.tolist()
        d = [[math.dist(p, q) for q in pts] for p in pts]
        mu = sum(v for row in d for v in row if v > 0) / sum(1 for row in d for v in row if v > 0)
        return [[v / mu for v in row] for row in d]

    ds, dt = normalised(es), normalised(et)
    expected = sum(_huber(ds[i][j], dt[i][j]) for i in range(3) for j in range(3)) / 9
    assert losses.rkd_distance(es, et).item() == pytest.approx(expected, rel=1e-5)
    assert losses.rkd_distance(2 * et, et).item() == pytest.approx(0.0, abs=1e-6)  # scale-invariant


def test_rkd_angle_by_loops():
    torch.manual_seed(2)
    es, et = torch.randn(4, 3), torch.randn(4, 3)

    def cosines(e):
        pts = e.tolist()
        out = {}
        for i, j, k in itertools.product(range(4), repeat=3):
            u = [a - b for a, b in zip(pts[j], pts[i])]
            v = [a - b for a, b in zip(pts[k], pts[i])]
            nu = math.sqrt(sum(x * x for x in u)) or 1.0
            nv = math.sqrt(sum(x * x for x in v)) or 1.0
            nu, nv = max(nu, 1e-12), max(nv, 1e-12)
            out[i, j, k] = sum(a * b for a, b in zip(u, v)) / (nu * nv)
        return out

    cs, ct = cosines(es), cosines(et)
    expected = sum(_huber(cs[key], ct[key]) for key in cs) / 64
    assert losses.rkd_angle(es, et).item() == pytest.approx(expected, rel=1e-5)


def test_feature_mimicry_and_logit_l2_by_hand():
    fs, ft = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    assert losses.feature_mimicry(fs, ft).item() == pytest.approx((1 + 0 + 4 + 9) / 4)
    assert losses.logit_l2(fs, ft).item() == pytest.approx(0.5 * ((1 + 0) + (4 + 9)) / 2)
    with pytest.raises(ValueError, match="equal feature shapes"):
        losses.feature_mimicry(fs, ft[:, :1])


def test_losses_stay_fp32_under_bf16_inputs():
    s, t = torch.randn(4, 10).bfloat16(), torch.randn(4, 10).bfloat16()
    assert losses.hinton_kd(s, t, 4.0).dtype == torch.float32
    assert losses.rkd_angle(s, t).dtype == torch.float32


@pytest.mark.parametrize("name", ["similarity_preserving", "rkd_distance", "rkd_angle", "hinton_kd", "logit_l2",
                                  "feature_mimicry", "attention_transfer"])
def test_losses_ignore_an_enclosing_bf16_autocast(name):
    # Autocast recasts matrix products to bf16 even for fp32 inputs; a student close to its teacher (the
    # regime late in training) makes the Gram / distance differences tiny, where bf16 rounding dominates.
    g = torch.Generator().manual_seed(0)
    if name == "attention_transfer":
        ft = [torch.randn(16, 8, 6, 6, generator=g)]
        fs = [t + 0.02 * torch.randn(t.shape, generator=g) for t in ft]
    else:
        ft = torch.randn(16, 32, generator=g)
        fs = ft + 0.02 * torch.randn(ft.shape, generator=g)
    fn = getattr(losses, name)
    args = (fs, ft, 4.0) if name == "hinton_kd" else (fs, ft)
    expected = fn(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn(*args)
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)
