"""Schedules vs torch.optim.lr_scheduler, warmup boundaries, LambdaLR state, LR range test."""

from __future__ import annotations

import io
import math
import pickle

import pytest
import torch
from torch import nn

from storyopt_lib import schedulers as S

N = 1000
TOL = 1e-9


def torch_lrs(make_scheduler, steps: int = N + 1) -> list[float]:
    """LR of update k = 0..steps-1 from a torch scheduler on base LR 1."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def assert_close_all(ours, theirs):
    worst = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    assert worst <= TOL, worst


@pytest.mark.parametrize(("step_size", "gamma"), [(30, 0.1), (7, 0.5), (1, 0.99)])
def test_step_decay_matches_steplr(step_size, gamma):
    ours = [S.StepDecay(step_size, gamma)(k) for k in range(N + 1)]
    theirs = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size, gamma))
    assert_close_all(ours, theirs)


@pytest.mark.parametrize("gamma", [0.95, 0.999, 1.001])
def test_exponential_decay_matches_exponentiallr(gamma):
    ours = [S.ExponentialDecay(gamma)(k) for k in range(N + 1)]
    theirs = torch_lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma))
    assert_close_all(ours, theirs)


@pytest.mark.parametrize("min_ratio", [0.0, 0.1])
def test_cosine_annealing_matches_until_end_then_stays(min_ratio):
    schedule = S.CosineAnnealing(N, min_ratio)
    ours = [schedule(k) for k in range(2 * N + 1)]
    theirs = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=N, eta_min=min_ratio),
        steps=2 * N + 1,
    )
    assert_close_all(ours[: N + 1], theirs[: N + 1])
    assert ours[N] == pytest.approx(min_ratio, abs=TOL)
    # Past total_steps ours stays at the minimum; PyTorch's cosine climbs back to 1 at 2N.
    assert all(v == pytest.approx(min_ratio, abs=TOL) for v in ours[N:])
    assert theirs[N + N // 2] > min_ratio + 0.4 and theirs[2 * N] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("t0", "mult", "min_ratio"), [(100, 1, 0.0), (10, 2, 0.05), (7, 3, 0.0)])
def test_warm_restarts_match_torch(t0, mult, min_ratio):
    schedule = S.CosineWarmRestarts(t0, mult, min_ratio)
    ours = [schedule(k) for k in range(N + 1)]
    theirs = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            o, T_0=t0, T_mult=mult, eta_min=min_ratio
        )
    )
    assert_close_all(ours, theirs)
    assert schedule(t0) == 1.0  # restart


@pytest.mark.parametrize(("total", "pct"), [(1000, 0.3), (100, 0.25), (57, 0.5)])
def test_one_cycle_matches_onecyclelr(total, pct):
    schedule = S.OneCycle(total, pct_start=pct, div_factor=25.0, final_div_factor=1e4)
    ours = [schedule(k) for k in range(total)]
    theirs = torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o,
            max_lr=1.0,
            total_steps=total,
            pct_start=pct,
            anneal_strategy="cos",
            three_phase=False,
            cycle_momentum=False,  # a LR multiplier cannot cycle momentum (see docstring)
        ),
        steps=total,
    )
    assert_close_all(ours, theirs)
    assert ours[0] == pytest.approx(1 / 25)
    assert max(ours) == pytest.approx(1.0, abs=1e-3)
    assert schedule(total + 10) == schedule(total - 1) == pytest.approx(1 / 25 / 1e4)


def test_linear_warmup_boundaries():
    s = S.LinearWarmup(10)
    assert s(0) == 0.1  # never 0 at step 0
    assert s(8) < s(9) == 1.0  # peak on the last warmup step
    assert s(10) == s(1000) == 1.0


def seed_lr_lambda(current_step, warmup_steps=10, total_steps=100):
    """The source chapter's create_storyteller_scheduler lambda, for comparison."""
    if current_step < warmup_steps:
        return current_step / warmup_steps
    progress = (current_step - warmup_steps) / (total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize(
    ("warmup", "total", "min_ratio"), [(10, 100, 0.1), (1, 50, 0.0), (5, 5, 0.2)]
)
def test_warmup_cosine_boundaries(warmup, total, min_ratio):
    s = S.WarmupCosine(warmup, total, min_ratio)
    values = [s(k) for k in range(total + 200)]
    assert values[0] > 0 and values[0] == pytest.approx(1 / warmup)
    assert values[warmup - 1] == 1.0 == max(values)  # peak at the last warmup step
    assert all(a >= b for a, b in zip(values[warmup - 1 :], values[warmup:], strict=False))
    assert values[total] == pytest.approx(min_ratio, abs=1e-12)
    assert all(v == pytest.approx(min_ratio, abs=1e-12) for v in values[total:])
    if warmup < total:
        assert values[warmup] < 1.0
    # The seed's lambda wastes update 0 (multiplier 0) and peaks one step later than ours.
    assert seed_lr_lambda(0) == 0.0 and seed_lr_lambda(10) == 1.0


def test_as_lambda_lr_state_dict_survives_weights_only_load():
    schedule = S.WarmupCosine(5, 50, min_ratio=0.1)
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.5)
    sched = S.as_lambda_lr(opt, schedule)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * schedule(0))
    for _ in range(20):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"scheduler": sched.state_dict(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    opt2 = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.5)
    opt2.load_state_dict(loaded["optimizer"])
    sched2 = S.as_lambda_lr(opt2, S.WarmupCosine(5, 50, min_ratio=0.1))
    sched2.load_state_dict(loaded["scheduler"])
    for _ in range(10):
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert sched2.last_epoch == 30
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * schedule(30))


def test_schedules_are_frozen_picklable_and_print_parameters():
    s = S.WarmupCosine(10, 100, 0.1)
    assert pickle.loads(pickle.dumps(s)) == s
    assert "warmup_steps=10" in repr(s)
    with pytest.raises(AttributeError):
        s.warmup_steps = 3
    assert S.Constant()(123) == 1.0


BAD = [
    (lambda: S.WarmupCosine(200, 100), ValueError, "warmup_steps=200"),
    (lambda: S.CosineAnnealing(0), ValueError, "total_steps=0"),
    (lambda: S.StepDecay(0), ValueError, "step_size=0"),
    (lambda: S.CosineWarmRestarts(0), ValueError, "first_cycle_steps=0"),
    (lambda: S.LinearWarmup(0), ValueError, "warmup_steps=0"),
    (lambda: S.WarmupCosine(0, 10), ValueError, "warmup_steps=0"),
    (lambda: S.StepDecay(10, gamma=0.0), ValueError, "gamma=0.0"),
    (lambda: S.ExponentialDecay(-0.5), ValueError, "gamma=-0.5"),
    (lambda: S.CosineWarmRestarts(10, cycle_mult=0), ValueError, "cycle_mult=0"),
    (lambda: S.CosineWarmRestarts(10, cycle_mult=1.5), TypeError, "cycle_mult=1.5"),
    (lambda: S.CosineAnnealing(10, min_ratio=1.5), ValueError, "min_ratio=1.5"),
    (lambda: S.WarmupCosine(1, 10, min_ratio=-0.1), ValueError, "min_ratio=-0.1"),
    (lambda: S.CosineAnnealing(10)(-1), ValueError, "step=-1"),
    (lambda: S.LinearWarmup(10)(2.5), TypeError, "step=2.5"),
    (lambda: S.CosineAnnealing(10.0), TypeError, "total_steps=10.0"),
]


@pytest.mark.parametrize(("make", "exc", "match"), BAD)
def test_bad_input(make, exc, match):
    with pytest.raises(exc) as info:
        make()
    assert match in str(info.value)


class TinyLM(nn.Module):
    """forward(x, y) -> (logits, loss), like the story model."""

    def __init__(self, vocab: int = 12, dim: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, x, y):
        logits = self.head(self.emb(x))
        return logits, nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())


def test_lr_range_test_tiny_model():
    torch.manual_seed(0)
    model = TinyLM()
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, 12, (8, 4, 9), generator=gen)
    loader = [(b[:, :-1], (b[:, 1:] + 1) % 12) for b in data]  # learnable: next = x + 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = S.lr_range_test(model, loader, min_lr=1e-4, max_lr=10.0, num_steps=60)
    assert len(result.lrs) >= 10
    assert all(a < b for a, b in zip(result.lrs, result.lrs[1:], strict=False))
    assert len(result.losses) == len(result.smoothed) == len(result.lrs)
    assert math.isfinite(result.suggested_lr) and 1e-4 / 10 <= result.suggested_lr <= 10.0
    assert min(result.smoothed) < result.smoothed[0]  # the loss did go down somewhere
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="max_lr=1e-05"):
        S.lr_range_test(model, loader, min_lr=1e-4, max_lr=1e-5)
