"""Learning-rate schedules as pure functions of the step, and the LR range test.

Each schedule is a small frozen dataclass; ``schedule(step)`` returns the multiplier of the base
learning rate at optimizer update ``step`` (0-based: step 0 is the first update). Being plain
dataclasses they print their parameters, pickle, and plug into ``torch.optim.lr_scheduler.LambdaLR``
through ``as_lambda_lr``, whose ``state_dict`` holds only their numeric fields.
"""

from __future__ import annotations

import copy
import itertools
import math
import operator
from dataclasses import dataclass, field

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "Constant",
    "CosineAnnealing",
    "CosineWarmRestarts",
    "ExponentialDecay",
    "LRRangeResult",
    "LinearWarmup",
    "OneCycle",
    "StepDecay",
    "WarmupCosine",
    "as_lambda_lr",
    "lr_range_test",
]


def _check_step(step: int) -> int:
    try:
        step = operator.index(step)
    except TypeError:
        raise TypeError(f"Invalid step: step={step!r} (must be an int)") from None
    if step < 0:
        raise ValueError(f"Invalid step: step={step} (must be >= 0)")
    return step


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Invalid {name}: {name}={value!r} (must be an int)")
    if value < 1:
        raise ValueError(f"Invalid {name}: {name}={value} (must be >= 1)")


def _check_gamma(gamma: float) -> None:
    if not (isinstance(gamma, (int, float)) and gamma > 0 and math.isfinite(gamma)):
        raise ValueError(f"Invalid gamma: gamma={gamma!r} (must be > 0)")


def _check_min_ratio(min_ratio: float) -> None:
    if not (isinstance(min_ratio, (int, float)) and 0.0 <= min_ratio <= 1.0):
        raise ValueError(f"Invalid min_ratio: min_ratio={min_ratio!r} (must be in [0, 1])")


def _cosine(progress: float, min_ratio: float) -> float:
    """min_ratio + (1 − min_ratio) · (1 + cos(π · progress)) / 2, progress in [0, 1]."""
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Constant:
    """η_t / η = 1 at every step."""

    def __call__(self, step: int) -> float:
        _check_step(step)
        return 1.0


@dataclass(frozen=True)
class StepDecay:
    """η_t / η = gamma ** (t // step_size), as ``StepLR(step_size, gamma)``.

    Example:
        >>> StepDecay(10, gamma=0.5)(25)
        0.25
    """

    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _check_count("step_size", self.step_size)
        _check_gamma(self.gamma)

    def __call__(self, step: int) -> float:
        return self.gamma ** (_check_step(step) // self.step_size)


@dataclass(frozen=True)
class ExponentialDecay:
    """η_t / η = gamma ** t, as ``ExponentialLR(gamma)``."""

    gamma: float

    def __post_init__(self) -> None:
        _check_gamma(self.gamma)

    def __call__(self, step: int) -> float:
        return self.gamma ** _check_step(step)


@dataclass(frozen=True)
class CosineAnnealing:
    """η_t / η = m + (1 − m)(1 + cos(π t / T)) / 2 for t <= T, and m for t > T.

    T = ``total_steps``, m = ``min_ratio`` (``CosineAnnealingLR(T_max=T, eta_min=m·η)``). Unlike
    PyTorch's closed form, which keeps following the cosine and climbs back to η at t = 2T, this
    schedule stays at m after T: training past the planned end does not restart the LR.
    """

    total_steps: int
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        _check_count("total_steps", self.total_steps)
        _check_min_ratio(self.min_ratio)

    def __call__(self, step: int) -> float:
        step = _check_step(step)
        return _cosine(min(step / self.total_steps, 1.0), self.min_ratio)


@dataclass(frozen=True)
class CosineWarmRestarts:
    """SGDR (Loshchilov & Hutter 2017): cosine over cycles of length T_i = T_0 · mult^i.

    η_t / η = m + (1 − m)(1 + cos(π t_cur / T_i)) / 2, where t_cur is the step within the current
    cycle; T_0 = ``first_cycle_steps``, mult = ``cycle_mult`` (an int, as PyTorch's ``T_mult``),
    m = ``min_ratio``. Matches ``CosineAnnealingWarmRestarts(T_0, T_mult, eta_min=m·η)``.
    """

    first_cycle_steps: int
    cycle_mult: int = 1
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        _check_count("first_cycle_steps", self.first_cycle_steps)
        if isinstance(self.cycle_mult, bool) or not isinstance(self.cycle_mult, int):
            raise TypeError(
                f"Invalid cycle_mult: cycle_mult={self.cycle_mult!r} (must be an int, as T_mult)"
            )
        if self.cycle_mult < 1:
            raise ValueError(f"Invalid cycle_mult: cycle_mult={self.cycle_mult} (must be >= 1)")
        _check_min_ratio(self.min_ratio)

    def __call__(self, step: int) -> float:
        t_cur, t_i = _check_step(step), self.first_cycle_steps
        if self.cycle_mult == 1:
            t_cur %= t_i
        else:
            while t_cur >= t_i:  # integer arithmetic: cycle boundaries are exact
                t_cur -= t_i
                t_i *= self.cycle_mult
        return _cosine(t_cur / t_i, self.min_ratio)


@dataclass(frozen=True)
class LinearWarmup:
    """η_t / η = (t + 1) / W for t < W, then 1 (W = ``warmup_steps``).

    Step 0 already gets η/W (never 0: the source chapter's ``t / W`` wastes the first update) and
    the peak η is reached on the last warmup step t = W − 1.
    """

    warmup_steps: int

    def __post_init__(self) -> None:
        _check_count("warmup_steps", self.warmup_steps)

    def __call__(self, step: int) -> float:
        step = _check_step(step)
        return (step + 1) / self.warmup_steps if step < self.warmup_steps else 1.0


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warmup, then cosine decay to ``min_ratio`` at ``total_steps``, then constant.

    With W = ``warmup_steps``, T = ``total_steps``, m = ``min_ratio``:
    η_t / η = (t + 1) / W for t < W; otherwise m + (1 − m)(1 + cos(π p)) / 2 with
    p = min((t − W + 1) / (T − W + 1), 1). The peak is at t = W − 1 (p = 0 there), the minimum m
    at t = T and after.

    Example:
        >>> s = WarmupCosine(10, 100, min_ratio=0.1)
        >>> s(0), s(9), s(100), s(500)
        (0.1, 1.0, 0.1, 0.1)
    """

    warmup_steps: int
    total_steps: int
    min_ratio: float = 0.0

    def __post_init__(self) -> None:
        _check_count("warmup_steps", self.warmup_steps)
        _check_count("total_steps", self.total_steps)
        if self.warmup_steps > self.total_steps:
            raise ValueError(
                f"Invalid warmup_steps: warmup_steps={self.warmup_steps} > "
                f"total_steps={self.total_steps}"
            )
        _check_min_ratio(self.min_ratio)

    def __call__(self, step: int) -> float:
        step = _check_step(step)
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_start = self.warmup_steps - 1  # the peak step
        progress = (step - decay_start) / (self.total_steps - decay_start)
        return _cosine(min(progress, 1.0), self.min_ratio)


@dataclass(frozen=True)
class OneCycle:
    """Smith & Topin (2019) one-cycle policy, as a multiplier of the peak LR (base LR = max_lr).

    Two cosine phases (PyTorch's ``OneCycleLR(anneal_strategy="cos", three_phase=False)``):
    from 1/d up to 1 over steps 0..E₁ with E₁ = pct_start · N − 1, then from 1 down to
    1/(d · f) at step N − 1 (N = ``total_steps``, d = ``div_factor``, f = ``final_div_factor``).
    Within a phase from a to b at progress p: b + (a − b)(1 + cos(π p)) / 2.

    The LR values agree with ``OneCycleLR(max_lr=η, total_steps=N, ...)`` to rounding (the test
    checks every step). What does not carry over: ``OneCycleLR`` also cycles momentum (or β₁)
    inversely to the LR, which a LR multiplier cannot do (pass ``cycle_momentum=False`` to compare),
    and it raises after N steps, where this schedule stays at its final value.
    """

    total_steps: int
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self) -> None:
        _check_count("total_steps", self.total_steps)
        if not (isinstance(self.pct_start, (int, float)) and 0.0 <= self.pct_start <= 1.0):
            raise ValueError(f"Invalid pct_start: pct_start={self.pct_start!r} (must be in [0, 1])")
        for name in ("div_factor", "final_div_factor"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"Invalid {name}: {name}={value!r} (must be > 0)")

    def __call__(self, step: int) -> float:
        step = min(_check_step(step), self.total_steps - 1)
        initial = 1.0 / self.div_factor
        final = initial / self.final_div_factor
        warm_end = float(self.pct_start * self.total_steps) - 1  # as PyTorch's phase end_step
        last = self.total_steps - 1
        if step <= warm_end:
            start_value, end_value = initial, 1.0
            progress = step / warm_end if warm_end > 0 else 1.0
        else:
            start_value, end_value = 1.0, final
            progress = (step - warm_end) / (last - warm_end) if last > warm_end else 1.0
        return end_value + (start_value - end_value) / 2.0 * (math.cos(math.pi * progress) + 1)


def as_lambda_lr(optimizer: torch.optim.Optimizer, schedule) -> LambdaLR:
    """Wrap ``schedule`` as a ``LambdaLR``: update k (0-based) uses lr = base_lr · schedule(k).

    Call ``scheduler.step()`` once after each real ``optimizer.step()`` (not after a step that
    ``GradScaler`` skipped). The ``state_dict`` stores the schedule's fields (plain numbers), so
    it survives ``torch.save`` / ``torch.load(weights_only=True)``.

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> sched = as_lambda_lr(opt, LinearWarmup(10))
        >>> round(opt.param_groups[0]["lr"], 6)
        0.01
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"Invalid optimizer: optimizer={type(optimizer).__name__} "
            "(must be a torch.optim.Optimizer)"
        )
    if not callable(schedule) or isinstance(schedule, type):
        raise TypeError(f"Invalid schedule: schedule={schedule!r} (must be a schedule instance)")
    return LambdaLR(optimizer, lr_lambda=schedule)


@dataclass
class LRRangeResult:
    """Output of ``lr_range_test``: LRs tried, raw and smoothed losses, and a suggestion."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggested_lr: float = float("nan")


def lr_range_test(
    model: torch.nn.Module,
    loader,
    *,
    optimizer: str = "adamw",
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    num_steps: int = 100,
    weight_decay: float = 0.0,
    smooth: float = 0.98,
    diverge_factor: float = 4.0,
    device: str | torch.device = "cpu",
) -> LRRangeResult:
    """Smith (2017) LR range test: raise the LR exponentially each step and record the loss.

    lr_i = min_lr · (max_lr / min_lr) ** (i / (num_steps − 1)); the smoothed loss is the
    bias-corrected running mean s_i = (β a_{i−1} + (1 − β) L_i) / (1 − β^{i+1}) with β = ``smooth``.
    The test stops early when s_i > ``diverge_factor`` · min(s). ``suggested_lr`` is the LR at the
    minimum of the smoothed loss divided by 10, a common rule of thumb. With β near 1 the smoothed
    curve lags the raw one (β = 0.98 over 100 steps: about a decade of LR), so that "/ 10" mostly
    undoes the lag rather than adding a safety margin; look at the plot. The model's weights
    (and train/eval mode) are restored afterwards; the optimizer is discarded.

    Args:
        model: called as ``model(x, y) -> (logits, loss)``.
        loader: iterable of ``(x, y)`` batches; cycled if shorter than ``num_steps``.
        optimizer: a ``create_optimizer`` name.

    Example:
        >>> result = lr_range_test(model, loader, num_steps=50)  # doctest: +SKIP
    """
    from storyopt_lib.optimizers import create_optimizer

    if not (isinstance(min_lr, (int, float)) and min_lr > 0 and math.isfinite(min_lr)):
        raise ValueError(f"Invalid min_lr: min_lr={min_lr!r} (must be > 0)")
    if not (isinstance(max_lr, (int, float)) and max_lr > min_lr and math.isfinite(max_lr)):
        raise ValueError(f"Invalid max_lr: max_lr={max_lr!r} (must be > min_lr={min_lr})")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"Invalid num_steps: num_steps={num_steps!r} (must be an int >= 2)")
    if not (isinstance(smooth, (int, float)) and 0.0 <= smooth < 1.0):
        raise ValueError(f"Invalid smooth: smooth={smooth!r} (must be in [0, 1))")
    if not (isinstance(diverge_factor, (int, float)) and diverge_factor > 1.0):
        raise ValueError(f"Invalid diverge_factor: diverge_factor={diverge_factor!r} (must be > 1)")

    saved_state = copy.deepcopy(model.state_dict())
    was_training = model.training
    model.to(device)
    opt = create_optimizer(model, optimizer, lr=min_lr, weight_decay=weight_decay)
    result = LRRangeResult()
    running = 0.0
    batches = itertools.cycle(loader)
    try:
        model.train()
        for i in range(num_steps):
            lr = min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))
            for group in opt.param_groups:
                group["lr"] = lr
            try:
                x, y = next(batches)
            except StopIteration:
                raise ValueError("Invalid loader: loader yielded no batches") from None
            _, loss = model(x.to(device), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            running = smooth * running + (1.0 - smooth) * value
            smoothed = running / (1.0 - smooth ** (i + 1))
            result.lrs.append(lr)
            result.losses.append(value)
            result.smoothed.append(smoothed)
            if not math.isfinite(smoothed) or smoothed > diverge_factor * min(result.smoothed):
                break
    finally:
        model.load_state_dict(saved_state)
        model.train(was_training)
    finite = [
        (s, lr) for s, lr in zip(result.smoothed, result.lrs, strict=True) if math.isfinite(s)
    ]
    if finite:
        result.suggested_lr = min(finite)[1] / 10.0
    return result
