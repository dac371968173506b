"""Tests for noisekd.attacks: PGD against torchattacks, the restart aggregates and the conventions."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisekd import attacks
from noisekd.attacks import pgd, robust_accuracy
from noisekd.models import wide_resnet

EPS_TOL = 1e-6


def _two_class_task(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Linearly separable 3x16x16 images: a fixed +-1 pattern added (class 1) or subtracted (class 0)."""
    pattern = torch.randint(0, 2, (3, 16, 16), generator=torch.Generator().manual_seed(123)).float() * 2 - 1
    y = torch.randint(0, 2, (n,), generator=generator)
    sign = (2 * y.float() - 1).view(-1, 1, 1, 1)
    x = 0.5 + 0.04 * sign * pattern + 0.15 * torch.randn(n, 3, 16, 16, generator=generator)
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained for 200 SGD steps on the synthetic task; returns (model, x_test, y_test)."""
    g = torch.Generator().manual_seed(0)
    x_train, y_train = _two_class_task(512, g)
    x_test, y_test = _two_class_task(128, g)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(200):
        idx = torch.randint(0, len(x_train), (64,), generator=g)
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    return model, x_test, y_test


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def _wrn_and_batch(n=16, dropout=0.0, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = wide_resnet(10, 1, dropout=dropout)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(n, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return model, x, y


class BandModel(nn.Module):
    """Class 1 wins only while the mean pixel value is within 0.02 of 0.79 (a narrow band).

    From an all-0.5 image of class 0 with step 0.1, signed gradient ascent climbs 0.5 -> 0.6 -> 0.7
    -> 0.8 (inside the band: fooled) and then oscillates 0.7 <-> 0.8, so the final iterate of an even
    number of steps >= 4 is classified correctly while an earlier iterate was not.
    """

    def forward(self, x):
        m = x.flatten(1).mean(1)
        z1 = 10.0 * (0.02 - (m - 0.79).abs())
        return torch.stack([torch.zeros_like(z1), z1], dim=1)


# --- agreement with torchattacks -------------------------------------------------------------


@pytest.mark.parametrize("steps,alpha", [(10, 2 / 255), (7, 0.003)])
def test_matches_torchattacks_without_random_start(steps, alpha):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = _wrn_and_batch(n=16)
    ours = pgd(model, x, y, 8 / 255, alpha, steps, random_start=False, early_stop=False, restarts=1)
    theirs = torchattacks.PGD(model, eps=8 / 255, alpha=alpha, steps=steps, random_start=False)(x, y)
    assert ours.shape == x.shape and ours.dtype == x.dtype
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model(ours).argmax(1), model(theirs).argmax(1))
    assert not torch.equal(ours, x)  # the attack did move the images


def test_matches_torchattacks_on_trained_model(trained):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = trained
    ours = pgd(model, x, y, 0.04, 0.01, 10, random_start=False, early_stop=False)
    theirs = torchattacks.PGD(model, eps=0.04, alpha=0.01, steps=10, random_start=False)(x, y)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model(ours).argmax(1), model(theirs).argmax(1))


# --- accuracy limits and the restart aggregates ------------------------------------------------


def test_eps_zero_gives_clean_accuracy(trained):
    model, x, y = trained
    clean = _accuracy(model, x, y)
    for early_stop in (True, False):
        r = robust_accuracy(model, x, y, 0.0, 0.01, 5, restarts=3, early_stop=early_stop)
        assert r["worst_of_restarts"] == pytest.approx(clean)
        assert r["min_over_runs"] == pytest.approx(clean)
        assert r["per_run"] == pytest.approx([clean] * 3)
    assert torch.equal(pgd(model, x, y, 0.0, 0.01, 5, restarts=2), x)


def test_large_eps_breaks_trained_model(trained):
    model, x, y = trained
    assert _accuracy(model, x, y) >= 0.95  # the fixture really is a trained model
    r = robust_accuracy(model, x, y, 1.0, 0.1, 20, restarts=2)
    assert r["worst_of_restarts"] <= 0.02
    assert r["min_over_runs"] <= 0.02


def test_worst_of_restarts_bounded_by_every_run(trained):
    model, x, y = trained
    # Few small steps from a random start: restarts disagree, so the aggregates differ.
    r = robust_accuracy(model, x, y, 0.08, 0.02, 2, restarts=5, generator=torch.Generator().manual_seed(1))
    assert len(r["per_run"]) == 5
    assert r["min_over_runs"] == min(r["per_run"])
    assert all(r["worst_of_restarts"] <= acc for acc in r["per_run"])
    assert r["worst_of_restarts"] <= r["min_over_runs"] <= r["mean_over_runs"] + 1e-12
    assert r["worst_of_restarts"] < r["min_over_runs"]  # this setting does separate them
    assert 0.0 < r["worst_of_restarts"] < _accuracy(model, x, y)
    assert r["fooled_rule"] == "any_iterate" and r["n"] == len(x) and r["restarts"] == 5


@pytest.mark.parametrize("early_stop", [True, False])
def test_pgd_images_realise_the_worst_case(trained, early_stop):
    """pgd's images are misclassified exactly for the samples robust_accuracy counts as broken."""
    model, x, y = trained
    kw = dict(restarts=5, early_stop=early_stop, batch_size=100)
    r = robust_accuracy(model, x, y, 0.08, 0.02, 2, generator=torch.Generator().manual_seed(3), **kw)
    adv = pgd(model, x, y, 0.08, 0.02, 2, generator=torch.Generator().manual_seed(3), **kw)
    assert r["worst_of_restarts"] < r["min_over_runs"]
    assert _accuracy(model, adv, y) == pytest.approx(r["worst_of_restarts"])


def test_single_restart_run_matches_pgd(trained):
    model, x, y = trained
    r = robust_accuracy(model, x, y, 0.08, 0.02, 2, restarts=1, generator=torch.Generator().manual_seed(5))
    adv = pgd(model, x, y, 0.08, 0.02, 2, restarts=1, generator=torch.Generator().manual_seed(5))
    assert r["per_run"] == [r["worst_of_restarts"]] == [r["min_over_runs"]]
    assert _accuracy(model, adv, y) == pytest.approx(r["worst_of_restarts"])


def test_without_random_start_all_restarts_agree(trained):
    model, x, y = trained
    r = robust_accuracy(model, x, y, 0.04, 0.01, 5, restarts=3, random_start=False)
    assert r["per_run"] == [r["worst_of_restarts"]] * 3


# --- projection, determinism, randomness -------------------------------------------------------


@pytest.mark.parametrize("eps,step_size", [(8 / 255, 0.003), (0.1, 0.05), (0.3, 0.5)])
def test_stays_in_eps_ball_and_unit_range(trained, eps, step_size):
    model, x, y = trained
    # Push some pixels onto the [0, 1] boundary so the range clamp is exercised too.
    x = x.clone()
    x[:, :, :2] = 0.0
    x[:, :, -2:] = 1.0
    for early_stop in (True, False):
        adv = pgd(model, x, y, eps, step_size, 4, restarts=3, early_stop=early_stop)
        assert adv.shape == x.shape and adv.dtype == x.dtype
        assert (adv - x).abs().max().item() <= eps + EPS_TOL
        assert adv.min().item() >= 0.0 and adv.max().item() <= 1.0


def test_float64_input_keeps_dtype(trained):
    model, x, y = trained
    adv = pgd(model, x.double(), y, 0.03, 0.01, 3)
    assert adv.dtype == torch.float64
    assert (adv - x.double()).abs().max().item() <= 0.03 + EPS_TOL


def test_same_seed_same_output_and_global_rng_untouched(trained):
    model, x, y = trained
    state = torch.get_rng_state()
    a = pgd(model, x, y, 0.05, 0.01, 3, restarts=2, generator=torch.Generator().manual_seed(7))
    b = pgd(model, x, y, 0.05, 0.01, 3, restarts=2, generator=torch.Generator().manual_seed(7))
    c = pgd(model, x, y, 0.05, 0.01, 3, restarts=2, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
    # generator=None means a fresh generator seeded 0, every time.
    d = pgd(model, x, y, 0.05, 0.01, 3, restarts=2)
    e = pgd(model, x, y, 0.05, 0.01, 3, restarts=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(d, e)
    r1 = robust_accuracy(model, x, y, 0.08, 0.02, 2, restarts=3, generator=torch.Generator().manual_seed(7))
    r2 = robust_accuracy(model, x, y, 0.08, 0.02, 2, restarts=3, generator=torch.Generator().manual_seed(7))
    assert r1 == r2
    assert torch.equal(torch.get_rng_state(), state)


def test_chunking_does_not_change_deterministic_attack(trained):
    model, x, y = trained
    kw = dict(random_start=False, early_stop=False, restarts=2)
    big = pgd(model, x, y, 0.04, 0.01, 5, batch_size=1024, **kw)
    small = pgd(model, x, y, 0.04, 0.01, 5, batch_size=3, **kw)  # 1 sample (2 rows) per chunk
    assert torch.allclose(big, small, rtol=0, atol=1e-6)


# --- model state ---------------------------------------------------------------------------------


def test_eval_mode_used_and_modes_restored():
    model, x, y = _wrn_and_batch(n=8, dropout=0.3)
    reference = pgd(model.eval(), x, y, 8 / 255, 2 / 255, 3, restarts=2)

    model.train()
    model.groups[1].eval()  # a mixed state must come back exactly as it was
    before = {name: m.training for name, m in model.named_modules()}
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    adv = pgd(model, x, y, 8 / 255, 2 / 255, 3, restarts=2)
    robust_accuracy(model, x, y, 8 / 255, 2 / 255, 3, restarts=2)
    assert {name: m.training for name, m in model.named_modules()} == before
    # Eval mode: no dropout noise (same images as from an eval-mode model), no BN statistics updates.
    assert torch.equal(adv, reference)
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k


def test_no_parameter_gradients_and_requires_grad_untouched():
    model, x, y = _wrn_and_batch(n=8)
    model.fc.bias.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    pgd(model, x, y, 8 / 255, 2 / 255, 3, restarts=2)
    robust_accuracy(model, x, y, 8 / 255, 2 / 255, 3, restarts=2)
    with torch.no_grad():
        pgd(model, x, y, 8 / 255, 2 / 255, 2)  # works under no_grad too
    assert all(p.grad is None for p in model.parameters())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags


def test_input_not_modified_and_no_graph_attached(trained):
    model, x, y = trained
    x_in = x.clone().requires_grad_(True)
    adv = pgd(model, x_in, y, 0.05, 0.01, 3)
    assert torch.equal(x_in.detach(), x)
    assert not adv.requires_grad and x_in.grad is None


# --- early stopping ------------------------------------------------------------------------------


def test_early_stop_is_never_weaker(trained):
    model, x, y = trained
    for eps, step, steps in [(0.08, 0.02, 2), (0.04, 0.01, 5), (0.06, 0.06, 6)]:
        es = robust_accuracy(model, x, y, eps, step, steps, restarts=3, generator=torch.Generator().manual_seed(11))
        full = robust_accuracy(
            model, x, y, eps, step, steps, restarts=3, generator=torch.Generator().manual_seed(11), early_stop=False
        )
        assert full["fooled_rule"] == "final_iterate"
        assert es["worst_of_restarts"] <= full["worst_of_restarts"]
        assert all(a <= b for a, b in zip(es["per_run"], full["per_run"]))


def test_early_stop_keeps_a_fooling_iterate_the_final_iterate_rule_does_not():
    model = BandModel()
    x = torch.full((2, 1, 4, 4), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    kw = dict(random_start=False, restarts=1)
    es = robust_accuracy(model, x, y, 0.5, 0.1, 4, **kw)
    final = robust_accuracy(model, x, y, 0.5, 0.1, 4, early_stop=False, **kw)
    assert es["worst_of_restarts"] == 0.0 and final["worst_of_restarts"] == 1.0
    adv_es = pgd(model, x, y, 0.5, 0.1, 4, **kw)
    adv_final = pgd(model, x, y, 0.5, 0.1, 4, early_stop=False, **kw)
    assert torch.allclose(adv_es, torch.full_like(x, 0.8), atol=1e-5)  # frozen at the fooling iterate
    assert torch.allclose(adv_final, torch.full_like(x, 0.7), atol=1e-5)  # oscillated back out
    assert _accuracy(model, adv_es, y) == 0.0 and _accuracy(model, adv_final, y) == 1.0


@pytest.mark.parametrize("early_stop", [True, False])
def test_restart_that_fools_is_returned(early_stop):
    """Sample-level worst case: where only some restarts fool a sample, pgd returns a fooling image."""
    model = BandModel()
    x = torch.full((16, 1, 4, 4), 0.5)
    y = torch.zeros(16, dtype=torch.long)
    # Restarts differ only in their random start; each one's trajectory lands in the band or not.
    kw = dict(restarts=6, early_stop=early_stop)
    r = robust_accuracy(model, x, y, 0.5, 0.1, 5, generator=torch.Generator().manual_seed(0), **kw)
    adv = pgd(model, x, y, 0.5, 0.1, 5, generator=torch.Generator().manual_seed(0), **kw)
    assert r["worst_of_restarts"] < r["min_over_runs"]  # no single restart is the worst case
    assert _accuracy(model, adv, y) == pytest.approx(r["worst_of_restarts"])


# --- arguments, constants, devices ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [dict(eps=-0.1), dict(eps=math.nan), dict(step_size=-1.0), dict(steps=-1), dict(steps=1.5), dict(restarts=0)],
)
def test_rejects_bad_arguments(trained, kwargs):
    model, x, y = trained
    args = dict(eps=0.03, step_size=0.01, steps=2, restarts=1) | kwargs
    with pytest.raises(ValueError):
        pgd(model, x, y, **args)


def test_rejects_integer_images_and_bad_labels(trained):
    model, x, y = trained
    with pytest.raises(TypeError):
        pgd(model, (x * 255).to(torch.uint8), y, 0.03, 0.01, 2)
    with pytest.raises(ValueError):
        pgd(model, x, y[:-1], 0.03, 0.01, 2)
    with pytest.raises(ValueError):
        robust_accuracy(model, x[:0], y[:0], 0.03, 0.01, 2)


def test_the_protocol_holds_the_papers_attacks():
    """config.yaml, the one place the protocol is written: ε = 8/255 (the paper's 0.031), step size 0.003
    (see config.yaml), 5 restarts, PGD-20; Table 4's step counts and Table 5's ε at 20 steps."""
    from noisekd.config import load_config, protocol_attack
    from noisekd.plan import Plan

    paper = protocol_attack()
    assert (paper.steps, paper.eps, paper.step_size, paper.restarts) == (20, 8 / 255, 0.003, 5)
    assert round(paper.eps, 3) == 0.031
    plan = Plan(load_config("config.yaml"))
    assert [a.steps for a in plan.table4_attacks] == [1, 5, 10, 15, 20, 100, 200, 1000]
    assert [round(a.eps * 255) for a in plan.table5_attacks] == [1, 2, 10, 20, 25, 50, 100, 200]
    assert {a.steps for a in plan.table5_attacks} == {20} and plan.pgd20 == paper


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(trained):
    model, x, y = trained
    cpu = pgd(model, x, y, 0.04, 0.01, 5, random_start=False, early_stop=False)
    model_cuda = copy.deepcopy(model).cuda()
    cuda = pgd(model_cuda, x.cuda(), y.cuda(), 0.04, 0.01, 5, random_start=False, early_stop=False)
    assert cuda.device.type == "cuda"
    assert (cuda.cpu() - cpu).abs().gt(1e-4).float().mean().item() < 0.01
    g = torch.Generator(device="cuda").manual_seed(0)
    r = robust_accuracy(model_cuda, x.cuda(), y.cuda(), 0.08, 0.02, 2, restarts=3, generator=g)
    assert r["worst_of_restarts"] <= r["min_over_runs"]
    with pytest.raises(ValueError):
        pgd(model_cuda, x.cuda(), y.cuda(), 0.04, 0.01, 2, generator=torch.Generator().manual_seed(0))


def test_one_long_attack_gives_every_shorter_step_count_exactly(trained):
    """PGD-T is a prefix of PGD-T' from the same start, so one run of max(steps) yields each T's result."""
    model, x, y = trained
    steps = [0, 1, 3, 8, 20]
    curve = attacks.robust_accuracy_curve(model, x, y, 0.06, 0.006, steps, restarts=3,
                                          generator=torch.Generator().manual_seed(5), batch_size=60)
    for t, res in zip(steps, curve):
        alone = robust_accuracy(model, x, y, 0.06, 0.006, t, restarts=3,
                                generator=torch.Generator().manual_seed(5), batch_size=60)
        assert res == alone
    accs = [r["worst_of_restarts"] for r in curve]
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[-1]  # the attack strengthens with steps
    # Without early stop, the final-iterate result at each T is that of a separate final-iterate PGD-T,
    # and the any-iterate aggregates of the same trajectories are the early-stopped run's.
    final = attacks.robust_accuracy_curve(model, x, y, 0.06, 0.006, steps, restarts=3, early_stop=False,
                                          generator=torch.Generator().manual_seed(5), batch_size=60)
    for t, res, fast in zip(steps, final, curve):
        alone = robust_accuracy(model, x, y, 0.06, 0.006, t, restarts=3, early_stop=False,
                                generator=torch.Generator().manual_seed(5), batch_size=60)
        assert res == alone and res["fooled_rule"] == "final_iterate"
        assert res["any_iterate"] == {k: fast[k] for k in res["any_iterate"]}
        assert res["any_iterate"]["worst_of_restarts"] <= res["worst_of_restarts"]


def _hand_pgd_min_over_runs(model, x, y, eps, step_size, steps, restarts, seed) -> float:
    """Madry et al.'s evaluation written out plainly: `restarts` whole-test-set runs from uniform random
    starts (drawn, restart-major, as one tensor), each scored by its final iterate; the worst run."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.rand((restarts * len(x), *x.shape[1:]), generator=g)
    accs = []
    for r in range(restarts):
        adv = (x + (2 * starts[r * len(x):(r + 1) * len(x)] - 1) * eps).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
            adv = torch.min(torch.max(adv.detach() + step_size * grad.sign(), x - eps), x + eps).clamp(0, 1)
        with torch.no_grad():
            accs.append((model(adv).argmax(1) == y).double().mean().item())
    return min(accs)


def test_the_final_iterate_min_over_runs_is_a_hand_run_pgd(trained):
    """The authors' aggregate (§2.3: the worst of 5 random-start runs, each scored as PGD scores it, by
    its final iterate) against a hand-written PGD on the same random starts, for every step count of
    one long run."""
    model, x, y = trained
    model.eval()
    curve = attacks.robust_accuracy_curve(model, x, y, 0.06, 0.006, [1, 5, 12], restarts=5, early_stop=False,
                                          generator=torch.Generator().manual_seed(3), batch_size=5 * len(x))
    hand = [_hand_pgd_min_over_runs(model, x, y, 0.06, 0.006, t, 5, 3) for t in (1, 5, 12)]
    assert [r["min_over_runs"] for r in curve] == hand
    assert hand[0] > hand[-1]  # the attack bites, so the comparison is not of two constants
