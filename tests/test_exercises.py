"""The checkers accept the reference, reject plausible mistakes, and say what is wrong."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from storyopt_lib import initializers, optimizers, schedulers
from storyopt_lib.exercises import (
    _FLAWS,
    OPTIMIZER_REFERENCES,
    CheckResult,
    _Flawed,
    _reference_accumulation,
    check_accumulation,
    check_init,
    check_optimizer,
    check_schedule,
)

# ---- optimizers --------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", list(OPTIMIZER_REFERENCES))
def test_check_optimizer_accepts_torch_reference(reference):
    result = check_optimizer(OPTIMIZER_REFERENCES[reference][0], reference)
    assert isinstance(result, CheckResult)
    assert result.passed and bool(result)
    assert result.message.startswith("PASSED")


@pytest.mark.parametrize(
    ("cls", "reference"),
    [
        (optimizers.AdamW, "adamw"),
        (optimizers.Adam, "adam"),
        (optimizers.SGD, "nesterov"),
        (optimizers.RMSprop, "rmsprop"),
        (optimizers.Adagrad, "adagrad"),
    ],
)
def test_check_optimizer_accepts_library_list_optimizers(cls, reference):
    assert check_optimizer(cls, reference).passed


def test_check_optimizer_accepts_scratch_optimizer_factory():
    def factory(params, **hp):
        return optimizers.ScratchOptimizer(params, "adamw", **hp)

    assert check_optimizer(factory, "adamw").passed


@pytest.mark.parametrize(
    ("reference", "flaw"), [(ref, flaw) for ref, flaws in _FLAWS.items() for flaw in flaws]
)
def test_check_optimizer_recognises_each_known_mistake(reference, flaw):
    def wrong(params, **hp):
        return _Flawed(params, reference, flaw, **hp)

    result = check_optimizer(wrong, reference)
    assert not result.passed
    assert result.details["flaw"] == flaw
    assert result.message.startswith("FAILED") and "step" in result.where


class AdamWithL2(torch.optim.Optimizer):
    """A reader's 'AdamW' that puts the decay inside the gradient (plausible mistake)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["t"] += 1
                g = p.grad + group["weight_decay"] * p
                st["m"] = b1 * st["m"] + (1 - b1) * g
                st["v"] = b2 * st["v"] + (1 - b2) * g * g
                m_hat = st["m"] / (1 - b1 ** st["t"])
                v_hat = st["v"] / (1 - b2 ** st["t"])
                p -= group["lr"] * m_hat / (v_hat.sqrt() + group["eps"])


class AdamNoBiasCorrection(AdamWithL2):
    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                st["m"] = b1 * st["m"] + (1 - b1) * p.grad
                st["v"] = b2 * st["v"] + (1 - b2) * p.grad**2
                p -= group["lr"] * st["m"] / (st["v"].sqrt() + group["eps"])


def test_check_optimizer_explains_hand_written_mistakes():
    l2 = check_optimizer(AdamWithL2, "adamw")
    assert not l2.passed and l2.details["flaw"] == "l2_in_adamw"
    assert "outside m and v" in l2.message
    nobc = check_optimizer(AdamNoBiasCorrection, "adamw")
    assert not nobc.passed and nobc.details["flaw"] == "no_bias_correction"
    assert "bias correction" in nobc.message and "step 1" in nobc.where


def test_check_optimizer_wrong_reference_is_caught():
    result = check_optimizer(torch.optim.Adam, "adamw")  # Adam's L2 is not AdamW's decay
    assert not result.passed and result.details["flaw"] == "l2_in_adamw"


def test_check_optimizer_reports_reader_errors_and_groups():
    class NoGroups(AdamWithL2):  # ignores param groups and crashes on a None grad
        @torch.no_grad()
        def step(self, closure=None):
            for p in self.param_groups[0]["params"] + self.param_groups[-1]["params"]:
                p -= 0.01 * p.grad

    result = check_optimizer(NoGroups, "adamw")
    assert not result.passed
    assert "raised" in result.message or result.where is not None

    class Bad(torch.optim.Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, {"lr": lr})

    result = check_optimizer(Bad, "adamw")
    assert (
        not result.passed and "TypeError" in result.message and "PyTorch's names" in result.message
    )


def test_check_optimizer_rejects_unknown_reference():
    with pytest.raises(ValueError, match="reference"):
        check_optimizer(torch.optim.SGD, "lion")


def test_check_optimizer_restores_thread_count():
    before = torch.get_num_threads()
    check_optimizer(torch.optim.SGD, "sgd")
    assert torch.get_num_threads() == before


# ---- schedules ---------------------------------------------------------------------------------


def test_check_schedule_accepts_reference_and_equivalent():
    ref = schedulers.WarmupCosine(10, 100, min_ratio=0.1)
    assert check_schedule(ref, ref).passed

    def mine(step):
        if step < 10:
            return (step + 1) / 10
        p = min((step - 9) / 91, 1.0)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))

    assert check_schedule(mine, ref).passed


def test_check_schedule_warmup_zero_at_step_zero():
    result = check_schedule(lambda t: min(1.0, t / 10), schedulers.LinearWarmup(10))
    assert not result.passed and result.where == "step 0"
    assert "0 at step 0" in result.message and "(step + 1)" in result.message


def test_check_schedule_other_mistakes():
    ref = schedulers.WarmupCosine(10, 100)
    ahead = check_schedule(lambda t: ref(t + 1), ref)
    assert not ahead.passed and "ahead" in ahead.message
    lr_not_multiplier = check_schedule(lambda t: 3e-4 * ref(t), ref)
    assert not lr_not_multiplier.passed and "multiplier" in lr_not_multiplier.message

    def unclamped(step):
        if step < 10:
            return (step + 1) / 10
        return 0.5 * (1 + math.cos(math.pi * (step - 9) / 91))

    late = check_schedule(unclamped, ref)
    assert not late.passed and "clamp" in late.message and late.details["step"] > 100


def test_check_schedule_reports_exceptions():
    def broken(step):
        raise ZeroDivisionError("division by zero")

    result = check_schedule(broken, schedulers.LinearWarmup(5))
    assert not result.passed and "ZeroDivisionError" in result.message


# ---- initializers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme", ["xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "orthogonal"]
)
def test_check_init_accepts_library(scheme):
    assert check_init(getattr(initializers, scheme), scheme).passed


def test_check_init_accepts_function_without_rng():
    def he(shape):
        fan_in, _ = initializers.get_fans(shape)
        return np.random.normal(0, math.sqrt(2 / fan_in), shape)

    assert check_init(he, "he_normal").passed


def test_check_init_rejects_swapped_fans():
    def he_fan_out(shape, rng):
        _, fan_out = initializers.get_fans(shape)
        return rng.normal(0, math.sqrt(2 / fan_out), shape)

    result = check_init(he_fan_out, "he_normal")
    assert not result.passed and "fan_out" in result.message


def test_check_init_rejects_std_as_uniform_bound():
    def xavier_bad(shape, rng):
        fan_in, fan_out = initializers.get_fans(shape)
        a = math.sqrt(2 / (fan_in + fan_out))
        return rng.uniform(-a, a, shape)

    result = check_init(xavier_bad, "xavier_uniform")
    assert not result.passed and "a²/3" in result.message


def test_check_init_rejects_wrong_family_and_non_orthogonal():
    result = check_init(initializers.xavier_uniform, "xavier_normal")
    assert not result.passed and "normal" in result.message
    result = check_init(initializers.he_normal, "orthogonal")
    assert not result.passed and "not orthogonal" in result.message


# ---- gradient accumulation ---------------------------------------------------------------------


def test_check_accumulation_accepts_reference():
    assert check_accumulation(_reference_accumulation).passed


def test_check_accumulation_rejects_divide_by_k_and_sum():
    def divide_by_k(model, optimizer, micro_batches):
        optimizer.zero_grad()
        for x, y in micro_batches:
            _, loss = model(x, y)
            (loss / len(micro_batches)).backward()
        optimizer.step()

    result = check_accumulation(divide_by_k)
    assert not result.passed and result.details["flaw"] == "divide_by_k"
    assert "smaller" in result.where and "n_i / N" in result.message

    def summed(model, optimizer, micro_batches):
        optimizer.zero_grad()
        for x, y in micro_batches:
            model(x, y)[1].backward()
        optimizer.step()

    result = check_accumulation(summed)
    assert not result.passed and result.details["flaw"] == "sum"


def test_check_accumulation_rejects_drop_last_and_missing_zero_grad():
    def drop_last(model, optimizer, micro_batches, size=None):
        optimizer.zero_grad()
        full = [b for b in micro_batches if len(b[0]) == len(micro_batches[0][0])]
        for x, y in full:
            (model(x, y)[1] / len(full)).backward()
        optimizer.step()

    assert check_accumulation(drop_last).details["flaw"] == "drop_last"

    def no_zero(model, optimizer, micro_batches):
        n = sum(len(x) for x, _ in micro_batches)
        for x, y in micro_batches:
            (model(x, y)[1] * len(x) / n).backward()
        optimizer.step()

    result = check_accumulation(no_zero)
    assert not result.passed and "update 2" in result.where and "zero_grad" in result.message
