"""Each method's behaviour, and the defects of public KD code pinned so they cannot appear here."""

from dataclasses import replace

import pytest
import torch

from noisekd.data import Augmentation, ImageData
from noisekd.errors import NoiseKDError
from noisekd.methods import METHODS, MethodParams, get_method
from noisekd.models import WRNSpec, build_model
from noisekd.noise import perturb_logits, redraw_labels
from noisekd.objective import distillation_loss, set_teacher_mode
from noisekd.settings import TrainConfig
from noisekd.train import fit

REQUIRED = [
    "baseline", "ga", "hinton", "ft", "sr", "mc", "noisy_teacher", "noisy_teacher_kl", "feature_mimicry",
    *[f"{b}{s}" for b in ("at", "sp", "rkd_d", "rkd_a", "rkd_da") for s in ("", "+hinton", "+ft")],
]


class Spy(torch.nn.Module):
    """Wraps a network and records what it was called with."""

    def __init__(self, net):
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x, features=False):
        self.inputs.append(x.detach().clone())
        return self.net(x, features=features)

    def draw_dropout(self):
        self.net.draw_dropout()


def _nets(dropout=0.0):
    teacher = build_model(WRNSpec(10, 2, dropout=dropout), 0)
    student = build_model(WRNSpec(10, 1), 1)
    return student, teacher


def _tiny_data(n=64, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ImageData(images, labels, tuple(str(i) for i in range(10)))


def test_registry_covers_every_method_of_the_seeds():
    assert set(REQUIRED) <= set(METHODS)
    with pytest.raises(NoiseKDError, match="unknown method 'hintn'"):
        get_method("hintn")


def test_paper_defaults_and_loss_weights():
    p = MethodParams()
    assert (p.alpha, p.tau, p.beta, p.gamma, p.lambda_d, p.lambda_a) == (0.9, 4.0, 1000.0, 3000.0, 25.0, 50.0)
    assert get_method("baseline").terms(p) == {"ce": 1.0}
    assert get_method("hinton").terms(p) == pytest.approx({"ce": 0.1, "kd": 0.9})
    assert get_method("at").terms(p) == {"ce": 1.0, "at": 500.0}
    assert get_method("sp+hinton").terms(p) == pytest.approx({"ce": 0.1, "kd": 0.9, "sp": 3000.0})
    assert get_method("rkd_da+ft").terms(p) == pytest.approx({"ce": 0.1, "kd": 0.9, "rkd_d": 25.0, "rkd_a": 50.0})
    assert get_method("rkd_da+ft").fickle_teacher and not get_method("rkd_da+hinton").fickle_teacher
    assert get_method("feature_mimicry").terms(MethodParams(lambda_fm=2.0)) == {"ce": 1.0, "fm": 2.0}


@pytest.mark.parametrize("bad", [dict(sigma=-0.1), dict(mc_rate=1.5), dict(alpha=-0.1), dict(dropout=1.0),
                                 dict(tau=0.0), dict(nt_rate=2.0)])
def test_bad_parameters_are_refused_with_the_name(bad):
    with pytest.raises(NoiseKDError, match=next(iter(bad))):
        MethodParams(**bad)
    with pytest.raises(NoiseKDError, match="unknown method parameter"):
        MethodParams.from_dict({"sigmaa": 0.1})


def test_methods_refuse_parameters_that_would_turn_them_into_another_method():
    with pytest.raises(NoiseKDError, match="sigma > 0"):
        get_method("sr").check(MethodParams())
    with pytest.raises(NoiseKDError, match="dropout"):
        get_method("ft").check(MethodParams())


def test_fickle_teacher_varies_but_its_batchnorm_statistics_stay_frozen():
    _, teacher = _nets(dropout=0.3)
    teacher.train()
    teacher(torch.rand(8, 3, 8, 8))  # give BN non-trivial running statistics
    set_teacher_mode(teacher, fickle=True)
    bn_before = {k: v.clone() for k, v in teacher.state_dict().items() if "running" in k}
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        a, b = teacher(x), teacher(x)
    assert not torch.allclose(a, b)
    assert all(torch.equal(bn_before[k], v) for k, v in teacher.state_dict().items() if "running" in k)
    set_teacher_mode(teacher, fickle=False)
    with torch.no_grad():
        assert torch.equal(teacher(x), teacher(x))


def test_soft_randomization_teacher_sees_the_clean_input_and_student_the_noisy_one():
    student, teacher = _nets()
    s_spy, t_spy = Spy(student), Spy(teacher.eval())
    x = torch.rand(16, 3, 8, 8)
    y = torch.randint(0, 10, (16,))
    params = MethodParams(sigma=0.1)
    distillation_loss(get_method("sr"), params, s_spy, t_spy, x, y, 10, torch.Generator().manual_seed(0))
    assert torch.equal(t_spy.inputs[0], x)
    delta = s_spy.inputs[0] - x
    assert 0.08 < delta.std().item() < 0.12 and abs(delta.mean().item()) < 0.02
    assert (s_spy.inputs[0] < 0).any()  # not clipped by default (see noisekd.methods)
    distillation_loss(get_method("sr"), MethodParams(sigma=0.5, clip_noisy_input=True), s_spy, t_spy, x, y, 10,
                      torch.Generator().manual_seed(0))
    assert s_spy.inputs[-1].min() >= 0 and s_spy.inputs[-1].max() <= 1


def test_feature_mimicry_student_noisy_teacher_clean():
    student, teacher = build_model(WRNSpec(10, 1), 1), build_model(WRNSpec(16, 1), 0)
    s_spy, t_spy = Spy(student), Spy(teacher.eval())
    x = torch.rand(8, 3, 8, 8)
    loss, _ = distillation_loss(get_method("feature_mimicry"), MethodParams(sigma=0.2), s_spy, t_spy, x,
                                torch.zeros(8, dtype=torch.long), 10, torch.Generator().manual_seed(0))
    assert torch.equal(t_spy.inputs[0], x) and not torch.equal(s_spy.inputs[0], x)
    assert torch.isfinite(loss)


def test_messy_collaboration_redraws_about_r_of_the_labels_over_the_full_range():
    labels = torch.zeros(200_000, dtype=torch.long)
    new = redraw_labels(labels, 0.3, 10, torch.Generator().manual_seed(0))
    # replaced with prob r by a uniform class (which is the true class 1/10 of the time)
    assert (new != labels).float().mean().item() == pytest.approx(0.3 * 0.9, abs=0.005)
    counts = torch.bincount(new[new != 0], minlength=10)
    assert new.min() >= 0 and new.max() <= 9
    assert counts[9] > 0.9 * counts[1:].float().mean()  # the last class is drawn (no off-by-one range)
    assert torch.equal(redraw_labels(labels, 0.0, 10, torch.Generator()), labels)


def test_messy_collaboration_uses_redrawn_targets_in_the_step():
    student, teacher = _nets()
    x, y = torch.rand(64, 3, 8, 8), torch.zeros(64, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    loss_mc, _ = distillation_loss(get_method("mc"), MethodParams(mc_rate=1.0, alpha=0.0), student,
                                   teacher.eval(), x, y, 10, g)
    loss_h, _ = distillation_loss(get_method("hinton"), MethodParams(alpha=0.0), student, teacher, x, y, 10, g)
    assert not torch.isclose(loss_mc, loss_h)


def test_noisy_teacher_perturbs_about_alpha_of_the_samples():
    logits = torch.randn(20_000, 10)
    out = perturb_logits(logits, sigma=0.5, rate=0.25, generator=torch.Generator().manual_seed(0))
    changed = (out != logits).any(dim=1).float().mean().item()
    assert changed == pytest.approx(0.25, abs=0.01)
    rows = (out != logits).any(dim=1)
    ratio = out[rows] / logits[rows] - 1.0  # xi per logit
    assert ratio.std().item() == pytest.approx(0.5, rel=0.05)


def _train(method, params, teacher, epochs=2, seed=0, **kw):
    student = build_model(WRNSpec(10, 1), 1)
    cfg = TrainConfig(epochs=epochs, milestones=(1,), batch_size=16, seed=seed)
    return fit(student, _tiny_data(), cfg, get_method(method), params, teacher=teacher,
               augmentation=Augmentation(crop_padding=1, hflip=True), device="cpu", log=lambda s: None, **kw)


@pytest.mark.parametrize("method,params", [
    ("hinton", MethodParams()),
    ("ft", MethodParams(dropout=0.3)),
    ("at+hinton", MethodParams()),
    ("sp", MethodParams()),
    ("rkd_da+ft", MethodParams(dropout=0.3)),
    ("sr", MethodParams(sigma=0.1)),
    ("mc", MethodParams(mc_rate=0.2)),
    ("noisy_teacher", MethodParams(nt_sigma=0.5, nt_rate=0.5)),
])
def test_teacher_gets_no_gradient_and_its_batchnorm_does_not_drift(method, params):
    teacher = build_model(WRNSpec(10, 2, dropout=params.dropout), 0)
    teacher.train()
    teacher(torch.rand(8, 3, 8, 8))
    teacher.train()  # left in train mode on purpose: fit must put it in eval mode
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    result = _train(method, params, teacher)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert result.summary["final_loss"] == result.summary["final_loss"]  # finite, not NaN


def test_feature_mimicry_refuses_embeddings_of_different_width():
    with pytest.raises(NoiseKDError, match="WRN-10-2 has embedding width 128 and student WRN-10-1 has 64"):
        _train("feature_mimicry", MethodParams(sigma=0.1), build_model(WRNSpec(10, 2), 0))


def test_methods_that_need_a_teacher_refuse_to_run_without_one():
    with pytest.raises(NoiseKDError, match="needs a teacher"):
        _train("hinton", MethodParams(), None)


# Each method at parameters it accepts, and another value of every parameter.
VALID = MethodParams(sigma=0.1, dropout=0.3, mc_rate=0.2, nt_sigma=0.5, nt_rate=0.5)
OTHER = {"alpha": 0.5, "tau": 2.0, "beta": 500.0, "gamma": 1500.0, "lambda_d": 10.0, "lambda_a": 20.0,
         "lambda_fm": 2.0, "sigma": 0.2, "mc_rate": 0.6, "nt_sigma": 0.9, "nt_rate": 0.9, "clip_noisy_input": True}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_method_reads_exactly_the_parameters_that_change_its_loss(name):
    """What `Method.reads` names (a student job's settings, so what a config edit reruns) is exactly what
    changes the training loss of a step, by trying every other parameter value on the same step."""
    method = get_method(name)
    student, teacher = _nets(dropout=0.3 if method.fickle_teacher else 0.0)
    if "fm" in method.terms(VALID):  # feature mimicry matches embeddings: a teacher of the student's width
        teacher = build_model(WRNSpec(10, 1), 0)
    set_teacher_mode(teacher, fickle=method.fickle_teacher)
    data = _tiny_data(n=16)
    x, y = data.images.float() / 255, data.labels

    def loss(params: MethodParams) -> torch.Tensor:
        torch.manual_seed(0)  # the Fickle teacher's own dropout masks (unarmed here) draw from the global RNG
        with torch.no_grad():
            value, _ = distillation_loss(method, params, student, teacher, x, y, 10, torch.Generator().manual_seed(0))
        return value

    reference = loss(VALID)
    changes = {field for field, value in OTHER.items() if not torch.equal(loss(replace(VALID, **{field: value})),
                                                                          reference)}
    # dropout selects the teacher (kind p<dropout>, trained with it) rather than entering the loss.
    assert changes | ({"dropout"} if method.fickle_teacher else set()) == set(method.reads(VALID))
    assert method.settings(VALID) == {k: getattr(VALID, k) for k in method.reads(VALID)}


def test_tau_is_read_only_while_the_kd_term_is_on():
    assert "tau" in get_method("hinton").reads(MethodParams())
    assert "tau" not in get_method("hinton").reads(MethodParams(alpha=0.0))  # KD weight 0: plain CE
    assert get_method("baseline").reads(MethodParams()) == ()


def test_every_loss_term_is_declared_once_and_computed_once():
    """The term names methods may weight (TERM_NEEDS, with what each needs of the teacher) are exactly
    the terms the objective computes; every registered method weights only such terms."""
    from noisekd.methods import LOGIT_TERMS, TERM_NEEDS
    from noisekd.objective import FEATURE_TERMS, TEACHER_TERMS, TERMS

    assert set(TERMS) == set(TERM_NEEDS)
    assert FEATURE_TERMS == {"at", "sp", "rkd_d", "rkd_a", "fm"} and LOGIT_TERMS == {"ce", "kd", "logit_l2"}
    assert TEACHER_TERMS == FEATURE_TERMS | {"kd", "logit_l2"}
    assert all(set(m.weights(MethodParams())) <= set(TERMS) for m in METHODS.values())


def test_cell_names_and_labels_come_from_the_method():
    assert get_method("sr").cell_name({"sigma": 0.05}) == "sr_s0.05"
    assert get_method("mc").cell_name({"mc_rate": 0.2}, 0.3) == "mc_r0.2_lc0.3"
    assert get_method("at+ft").cell_name({"dropout": 0.4}) == "at+ft_p0.4"
    assert get_method("ft").cell_label({"dropout": 0.3}) == "FT-0.3"
    assert get_method("mc").cell_label({"mc_rate": 0.2}, 0.3) == "MC r=0.2 (30% noisy labels)"
    assert get_method("rkd_da+hinton").label == "RKD-DA+H"
