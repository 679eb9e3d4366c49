"""Checkers for the end-of-chapter exercises: is the reader's code right, and if not, why not.

Each checker runs the reader's code and a reference on a few small problems, in float64, and
returns a ``CheckResult``: ``passed``, and a ``message`` that names the first place where the two
differ and says, in one sentence the reader can act on, what is most likely wrong. Known mistakes
(Adam's L2 penalty instead of AdamW's decoupled decay, no bias correction, ε inside the square
root, the source chapter's momentum form, a warmup that is 0 at step 0, swapped fans, a gradient
accumulation that ignores the smaller last micro-batch, ...) are recognised by running them too.

- ``check_optimizer(cls, reference)``: against ``torch.optim`` (``"sgd"``, ``"momentum"``,
  ``"nesterov"``, ``"adagrad"``, ``"rmsprop"``, ``"adam"``, ``"adamw"``).
- ``check_schedule(fn, reference)``: a LR multiplier ``fn(step)`` against a schedule of
  ``storyopt_lib.schedulers``.
- ``check_init(fn, scheme)``: a NumPy initializer against the statistics its scheme prescribes.
- ``check_accumulation(fn)``: one optimizer update from unequal micro-batches against the update
  from the whole batch.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "OPTIMIZER_REFERENCES",
    "CheckResult",
    "check_accumulation",
    "check_init",
    "check_optimizer",
    "check_schedule",
]

RTOL = 1e-7
ATOL = 1e-10


@dataclass
class CheckResult:
    """What a checker found. ``bool(result)`` is ``passed``; Jupyter displays ``message``.

    ``where`` names the first difference (problem and step, or shape) when there is one;
    ``details`` holds the numbers behind the message.
    """

    passed: bool
    message: str
    where: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython display
        p.text(self.message)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the tiny check problems on one thread (restored afterwards): on a busy machine, thread
    hand-offs cost far more than the float64 arithmetic of a 4×3 matrix."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _single_threaded(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _one_thread():
            return fn(*args, **kwargs)

    return wrapper


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)


def _ok(message: str, **details: Any) -> CheckResult:
    return CheckResult(True, "PASSED: " + message, None, details)


def _fail(message: str, where: str | None = None, **details: Any) -> CheckResult:
    return CheckResult(False, "FAILED: " + message, where, details)


# =============================================================================================
# Optimizers
# =============================================================================================

# reference name -> (torch.optim class, hyperparameters of the check). ε is large on purpose,
# so that where it goes (inside or outside the square root) changes the numbers visibly.
OPTIMIZER_REFERENCES: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {"lr": 0.05, "weight_decay": 0.01}),
    "momentum": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    "nesterov": (
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    ),
    "adagrad": (torch.optim.Adagrad, {"lr": 0.1, "eps": 1e-3, "weight_decay": 0.01}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "eps": 1e-3, "weight_decay": 0.01}),
    "adam": (
        torch.optim.Adam,
        {"lr": 0.02, "betas": (0.9, 0.99), "eps": 1e-3, "weight_decay": 0.05},
    ),
    "adamw": (
        torch.optim.AdamW,
        {"lr": 0.02, "betas": (0.9, 0.99), "eps": 1e-3, "weight_decay": 0.1},
    ),
}

_STEPS = 24
_LR_CHANGES = {9: 0.3, 17: 0.1}  # update index (1-based) -> factor of the base LR from then on

_FLAW_SENTENCES = {
    "lr_cached": "it keeps the learning rate it was created with: read group['lr'] inside "
    "step(), because a scheduler changes it between steps.",
    "no_weight_decay": "it ignores weight_decay: apply group['weight_decay'] in every step.",
    "l2_in_adamw": "it adds weight_decay·θ to the gradient (Adam's L2 penalty, which √v̂ then "
    "rescales); AdamW decays the weights directly, θ ← θ − η·λ·θ, outside m and v.",
    "decoupled_in_adam": "it decays the weights directly (that is AdamW); torch.optim.Adam adds "
    "weight_decay·θ to the gradient before m and v are updated.",
    "no_bias_correction": "it skips the bias correction: divide m by (1 − β₁ᵗ) and v by "
    "(1 − β₂ᵗ), with t counting updates from 1, or the first steps are far too small.",
    "eps_inside": "it puts ε inside the square root: divide by √v̂ + ε, as PyTorch does, "
    "not by √(v̂ + ε).",
    "decay_without_lr": "it decays by θ ← θ − λ·θ: the decoupled decay is scaled by the "
    "learning rate too, θ ← θ − η·λ·θ.",
    "decay_after_update": "it decays the weights after the Adam step; decay first, "
    "θ ← θ·(1 − η·λ), then subtract η·m̂/(√v̂ + ε), as torch.optim.AdamW does.",
    "seed_momentum": "it keeps the velocity in parameter units (v ← μv + ηg; θ ← θ − v, the "
    "source chapter's form), which equals PyTorch's only while η is constant: keep b ← μb + g and "
    "step θ ← θ − η·b.",
    "dampening": "it scales the gradient by (1 − μ) in the buffer (dampening); PyTorch's default "
    "adds the whole gradient: b ← μb + g.",
    "no_nesterov": "it takes a plain momentum step θ ← θ − η·b; Nesterov steps with the "
    "look-ahead direction θ ← θ − η·(g + μ·b).",
    "alpha_swapped": "it weights the new squared gradient by α: the running average is "
    "v ← α·v + (1 − α)·g².",
}

_FLAWS: dict[str, tuple[str, ...]] = {
    "sgd": ("no_weight_decay", "lr_cached"),
    "momentum": ("seed_momentum", "dampening", "no_weight_decay", "lr_cached"),
    "nesterov": ("no_nesterov", "seed_momentum", "dampening", "no_weight_decay", "lr_cached"),
    "adagrad": ("eps_inside", "no_weight_decay", "lr_cached"),
    "rmsprop": ("eps_inside", "alpha_swapped", "no_weight_decay", "lr_cached"),
    "adam": (
        "decoupled_in_adam",
        "no_bias_correction",
        "eps_inside",
        "no_weight_decay",
        "lr_cached",
    ),
    "adamw": (
        "l2_in_adamw",
        "no_bias_correction",
        "eps_inside",
        "decay_without_lr",
        "decay_after_update",
        "no_weight_decay",
        "lr_cached",
    ),
}


def _flawed_step(p, g, state, group, lr, wd, algorithm: str, flaw: str) -> None:
    """One update of ``algorithm`` with one deliberate ``flaw`` (for the diagnosis only)."""
    if algorithm in ("sgd", "momentum", "nesterov"):
        mu = group.get("momentum", 0.0)
        g = g + wd * p
        if mu == 0:
            p.sub_(lr * g)
        elif flaw == "seed_momentum":
            v = state.setdefault("v", torch.zeros_like(p))
            v.mul_(mu).add_(lr * g)
            p.sub_(v)
        else:
            b = state.get("b")
            if b is None:
                b = state["b"] = g.clone() if flaw != "dampening" else (1 - mu) * g
            else:
                b.mul_(mu).add_((1 - mu) * g if flaw == "dampening" else g)
            nesterov = group.get("nesterov", False) and flaw != "no_nesterov"
            p.sub_(lr * (g + mu * b if nesterov else b))
        return
    eps = group["eps"]

    def denom(v: torch.Tensor) -> torch.Tensor:
        return (v + eps).sqrt() if flaw == "eps_inside" else v.sqrt() + eps

    if algorithm == "adagrad":
        g = g + wd * p
        s = state.setdefault("sum", torch.zeros_like(p))
        s.add_(g * g)
        p.sub_(lr * g / denom(s))
    elif algorithm == "rmsprop":
        g = g + wd * p
        alpha = group["alpha"]
        v = state.setdefault("v", torch.zeros_like(p))
        if flaw == "alpha_swapped":
            v.mul_(1 - alpha).add_(alpha * g * g)
        else:
            v.mul_(alpha).add_((1 - alpha) * g * g)
        p.sub_(lr * g / denom(v))
    else:  # adam, adamw
        beta1, beta2 = group["betas"]
        decoupled = (algorithm == "adamw") != (flaw in ("l2_in_adamw", "decoupled_in_adam"))
        state["t"] = t = state.get("t", 0) + 1
        if not decoupled:
            g = g + wd * p
        elif flaw != "decay_after_update":
            p.mul_(1 - (wd if flaw == "decay_without_lr" else lr * wd))
        m = state.setdefault("m", torch.zeros_like(p))
        v = state.setdefault("v", torch.zeros_like(p))
        m.mul_(beta1).add_((1 - beta1) * g)
        v.mul_(beta2).add_((1 - beta2) * g * g)
        if flaw == "no_bias_correction":
            m_hat, v_hat = m, v
        else:
            m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        p.sub_(lr * m_hat / denom(v_hat))
        if decoupled and flaw == "decay_after_update":
            p.mul_(1 - lr * wd)


class _Flawed(torch.optim.Optimizer):
    """A reference optimizer with one known mistake, to recognise the reader's."""

    def __init__(self, params: Any, algorithm: str, flaw: str, **hparams: Any) -> None:
        super().__init__(params, hparams)
        self.algorithm, self.flaw, self.initial_lr = algorithm, flaw, hparams["lr"]

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr = self.initial_lr if self.flaw == "lr_cached" else group["lr"]
            wd = 0.0 if self.flaw == "no_weight_decay" else group.get("weight_decay", 0.0)
            for p in group["params"]:
                if p.grad is not None:
                    g = p.grad.clone()
                    _flawed_step(p, g, self.state[p], group, lr, wd, self.algorithm, self.flaw)


@dataclass(frozen=True)
class _Problem:
    name: str
    groups: bool  # two param groups (no decay on the second) and a parameter without a gradient
    lr_changes: bool  # the LR is changed between steps, as a scheduler would


_PROBLEMS = (
    _Problem("regression", groups=False, lr_changes=False),
    _Problem("two param groups", groups=True, lr_changes=False),
    _Problem("changing lr", groups=False, lr_changes=True),
)


def _problem_params() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    kw = {"generator": g, "dtype": torch.float64}
    return {
        "W": (0.5 * torch.randn(4, 3, **kw)).requires_grad_(),
        "b": (0.1 * torch.randn(3, **kw)).requires_grad_(),
        "unused": torch.ones(2, dtype=torch.float64, requires_grad=True),
    }


def _problem_loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Least squares on features of very different scales, plus a non-quadratic term."""
    g = torch.Generator().manual_seed(1)
    kw = {"generator": g, "dtype": torch.float64}
    x = torch.randn(32, 4, **kw) * torch.tensor([1.0, 5.0, 0.2, 1.0], dtype=torch.float64)
    y = torch.randn(32, 3, **kw)
    pred = x @ params["W"] + params["b"]
    return ((pred - y) ** 2).mean() + 0.1 * torch.tanh(params["W"]).pow(2).sum()


def _run_optimizer(
    factory: Callable[..., Any], hp: dict[str, Any], problem: _Problem, list_mode: bool
) -> list[dict[str, torch.Tensor]]:
    """Parameters after each of ``_STEPS`` updates."""
    params = _problem_params()
    names = ["W", "b", "unused"] if problem.groups else ["W", "b"]
    params = {n: params[n] for n in names}
    snapshots = []
    if list_mode:
        arrays = [params[n].detach().numpy().copy() for n in names]
        opt = factory(arrays, **hp)
        for t in range(1, _STEPS + 1):
            if problem.lr_changes and t in _LR_CHANGES:
                opt.lr = hp["lr"] * _LR_CHANGES[t]
            tensors = {
                n: torch.from_numpy(a.copy()).requires_grad_()
                for n, a in zip(names, arrays, strict=True)
            }
            _problem_loss(tensors).backward()
            opt.step([tensors[n].grad.numpy() for n in names])
            snapshots.append(
                {
                    n: torch.from_numpy(np.array(a, copy=True))
                    for n, a in zip(names, arrays, strict=True)
                }
            )
        return snapshots
    if problem.groups:
        spec: Any = [
            {"params": [params["W"]]},
            {"params": [params["b"], params["unused"]], "weight_decay": 0.0},
        ]
    else:
        spec = list(params.values())
    opt = factory(spec, **hp)
    for t in range(1, _STEPS + 1):
        if problem.lr_changes and t in _LR_CHANGES:
            for group in opt.param_groups:
                group["lr"] = hp["lr"] * _LR_CHANGES[t]
        for p in params.values():
            p.grad = None
        _problem_loss(params).backward()
        opt.step()
        snapshots.append({n: p.detach().clone() for n, p in params.items()})
    return snapshots


def _first_difference(got: list[dict], ref: list[dict]) -> tuple[int, str, float, float] | None:
    """(step, parameter, expected, got) at the first differing step, else None."""
    for t, (a, b) in enumerate(zip(got, ref, strict=True), start=1):
        for n, expected in b.items():
            actual = a[n].to(torch.float64)
            if actual.shape != expected.shape:
                return t, n, math.nan, math.nan
            close = torch.isclose(actual, expected, rtol=RTOL, atol=ATOL)
            if not bool(close.all()):
                i = int((actual - expected).abs().nan_to_num(math.inf).argmax())
                return t, n, float(expected.flatten()[i]), float(actual.flatten()[i])
    return None


@_single_threaded
def check_optimizer(
    optimizer_cls: Callable[..., Any], reference: str = "adamw", **hparams: Any
) -> CheckResult:
    """Compare a reader's optimizer with ``torch.optim`` on three small problems, step by step.

    The problems (float64, ``_STEPS`` updates each): least squares with badly scaled features;
    the same with two param groups (the second with ``weight_decay=0`` and a parameter whose
    ``.grad`` is None); the same while the learning rate is changed between steps. The first step
    at which a parameter differs (``rtol=1e-7``) is reported, with a diagnosis when the reader's
    trajectory coincides with a known mistake.

    Args:
        optimizer_cls: a ``torch.optim.Optimizer`` subclass (or factory) called as
            ``optimizer_cls(params_or_groups, **hparams)``; or a from-scratch list optimizer
            (``opt.step(grads)`` updating NumPy arrays in place, ``opt.lr`` settable), as in
            ``storyopt_lib.optimizers``. Hyperparameters use PyTorch's names.
        reference: one of ``OPTIMIZER_REFERENCES``.
        **hparams: override the check's hyperparameters (e.g. ``weight_decay=0.0``).

    Example:
        >>> check_optimizer(torch.optim.AdamW, "adamw").passed
        True
    """
    if reference not in OPTIMIZER_REFERENCES:
        raise ValueError(
            f"Unknown reference: reference={reference!r} (valid: {', '.join(OPTIMIZER_REFERENCES)})"
        )
    if not callable(optimizer_cls):
        raise TypeError(f"Invalid optimizer_cls: {optimizer_cls!r} (must be a class or callable)")
    ref_cls, hp = OPTIMIZER_REFERENCES[reference]
    hp = {**hp, **hparams}
    who, ref_name = _name(optimizer_cls), f"torch.optim.{ref_cls.__name__}"

    list_mode = not (
        isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)
    )
    if list_mode:  # a factory may still return a torch optimizer
        try:
            probe = optimizer_cls([torch.zeros(1, dtype=torch.float64, requires_grad=True)], **hp)
        except Exception:
            probe = None
        list_mode = not isinstance(probe, torch.optim.Optimizer)
    problems = [p for p in _PROBLEMS if not (list_mode and p.groups)]

    runs: dict[str, list[dict]] = {}
    for problem in problems:
        try:
            runs[problem.name] = _run_optimizer(optimizer_cls, hp, problem, list_mode)
        except Exception as exc:  # report the reader's error, do not raise
            hint = ""
            if isinstance(exc, TypeError):
                names = ", ".join(f"{k}={v!r}" for k, v in hp.items())
                hint = f" It must accept PyTorch's names ({names})."
            if list_mode and isinstance(exc, AttributeError):
                hint = " A list optimizer must have a settable `lr` attribute."
            return _fail(
                f"{who} raised {type(exc).__name__}: {exc} (problem '{problem.name}').{hint}",
                where=problem.name,
            )

    refs = {pr.name: _run_optimizer(ref_cls, hp, pr, False) for pr in problems}
    first = None
    for problem in problems:
        diff = _first_difference(runs[problem.name], refs[problem.name])
        if diff is not None:
            first = (problem, *diff)
            break
    if first is None:
        n = len(problems)
        return _ok(
            f"{who} matches {ref_name} on {n} problems × {_STEPS} steps "
            f"(every parameter within rtol={RTOL:g})."
        )
    problem, step, pname, expected, got = first
    where = f"problem '{problem.name}', step {step}, parameter {pname}"
    head = (
        f"{who} differs from {ref_name} first at {where}: "
        f"expected {expected:.10g}, got {got:.10g}; "
    )
    for flaw in _FLAWS[reference]:
        matched = True
        for pr in problems:
            flawed = _run_optimizer(
                lambda params, flaw=flaw, **h: _Flawed(params, reference, flaw, **h), hp, pr, False
            )
            if _first_difference(runs[pr.name], flawed) is not None:
                matched = False
                break
        if matched:
            return _fail(head + _FLAW_SENTENCES[flaw], where=where, flaw=flaw, step=step)
    others_pass = all(
        _first_difference(runs[p.name], refs[p.name]) is None for p in problems if p is not problem
    )
    if problem.lr_changes and others_pass:
        change = min(_LR_CHANGES)
        advice = (
            f"it is right while the learning rate is constant but not after it changes at step "
            f"{change}: read group['lr'] in every step and apply it to the whole update."
        )
    elif problem.groups and others_pass:
        advice = (
            "it is right with one param group but not with two: loop over self.param_groups, "
            "use each group's own hyperparameters (weight_decay=0 on the second), and skip "
            "parameters whose .grad is None."
        )
    elif step == 1:
        advice = (
            "already the first update differs: compare your formula for t = 1 with the "
            "reference's, term by term (bias correction, where ε goes, how weight decay enters)."
        )
    else:
        advice = (
            f"the first {step - 1} updates agree, so the formula is nearly right: check the state "
            "kept between steps (moment buffers, the step counter t)."
        )
    return _fail(head + advice, where=where, flaw=None, step=step)


# =============================================================================================
# Learning-rate schedules
# =============================================================================================


def _schedule_length(reference: Any) -> int:
    for attr in ("total_steps", "first_cycle_steps", "warmup_steps", "step_size"):
        value = getattr(reference, attr, None)
        if isinstance(value, int):
            return int(value * (1.5 if attr == "total_steps" else 3)) + 2
    return 100


def _constant_ratio(got: np.ndarray, expected: np.ndarray) -> float | None:
    """c if got == c · expected at every step (c != 1), else None."""
    nonzero = expected != 0
    if not nonzero.any() or np.any(got[~nonzero] != 0):
        return None
    ratios = got[nonzero] / expected[nonzero]
    c = float(ratios[0])
    return c if np.allclose(ratios, c, rtol=1e-6) and not math.isclose(c, 1.0) else None


def check_schedule(
    fn: Callable[[int], float], reference: Callable[[int], float], steps: int | None = None
) -> CheckResult:
    """Compare a reader's LR multiplier ``fn(step)`` with ``reference(step)`` for every step.

    Steps are 0-based optimizer updates (step 0 is the first update, as ``LambdaLR`` calls it).
    ``steps`` defaults to 1.5 × ``total_steps`` (so what happens after the end is checked too).

    Example:
        >>> from storyopt_lib.schedulers import LinearWarmup
        >>> check_schedule(lambda t: min(1.0, (t + 1) / 10), LinearWarmup(10)).passed
        True
    """
    if not callable(fn):
        raise TypeError(f"Invalid fn: {fn!r} (must be callable as fn(step))")
    if not callable(reference):
        raise TypeError(f"Invalid reference: {reference!r} (must be callable as reference(step))")
    n = _schedule_length(reference) if steps is None else steps
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"Invalid steps: steps={steps!r} (must be an int >= 2)")
    who, ref = _name(fn), repr(reference)
    expected = np.array([float(reference(t)) for t in range(n)])
    try:
        got = np.array([float(fn(t)) for t in range(n)])
    except Exception as exc:
        return _fail(f"{who} raised {type(exc).__name__}: {exc}.")
    close = np.isclose(got, expected, rtol=1e-9, atol=1e-12)
    if close.all():
        return _ok(f"{who} matches {ref} at every step 0..{n - 1}.")
    t = int(np.argmin(close))
    head = (
        f"{who} differs from {ref} first at step {t}: "
        f"expected {expected[t]:.6g}, got {got[t]:.6g}; "
    )
    where = f"step {t}"
    if got[0] == 0 and expected[0] > 0:
        advice = (
            "it is 0 at step 0, so the first update does not move the weights: use "
            "(step + 1) / warmup_steps, which gives lr/warmup_steps at step 0 and the peak on the "
            "last warmup step."
        )
    elif np.allclose(got[1:], expected[:-1], rtol=1e-9, atol=1e-12):
        advice = (
            "it lags one step behind the reference: shift it by one "
            "(use step + 1 where you use step)."
        )
    elif np.allclose(got[:-1], expected[1:], rtol=1e-9, atol=1e-12):
        advice = "it runs one step ahead of the reference: use step where you use step + 1."
    elif _constant_ratio(got, expected) is not None:
        advice = (
            f"it is {_constant_ratio(got, expected):.6g} × the reference everywhere: return the "
            "multiplier of the base learning rate (LambdaLR multiplies it by lr), "
            "not the learning rate itself."
        )
    elif hasattr(reference, "total_steps") and t > reference.total_steps:
        advice = (
            f"it agrees up to step {reference.total_steps} (total_steps) but not after: clamp the "
            "progress to 1 so the multiplier stays at its final value instead of rising again."
        )
    else:
        advice = "compare your formula with the reference's docstring at that step."
    return _fail(head + advice, where=where, step=t)


# =============================================================================================
# Initializers
# =============================================================================================

_INIT_SHAPES = ((512, 128), (64, 512), (32, 16, 5, 5))


def _fans(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) == 2:
        return shape[0], shape[1]
    r = math.prod(shape[2:])
    return shape[1] * r, shape[0] * r


def _expected_var(scheme: str, shape: Sequence[int], gain: float) -> float:
    fan_in, fan_out = _fans(shape)
    if scheme.startswith("xavier"):
        return gain**2 * 2.0 / (fan_in + fan_out)
    if scheme.startswith("he"):
        return 2.0 / fan_in
    return (
        gain**2 / math.prod(shape[1:]) if shape[0] >= math.prod(shape[1:]) else gain**2 / shape[0]
    )


_INIT_SCHEMES = ("xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "orthogonal")


def _call_init(fn: Callable[..., Any], shape: tuple[int, ...], seed: int) -> np.ndarray:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "rng" in params:
        out = fn(shape, rng=np.random.default_rng(seed))
    else:
        np.random.seed(seed)
        torch.manual_seed(seed)
        out = fn(shape)
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    return np.asarray(out, dtype=np.float64)


@_single_threaded
def check_init(
    fn: Callable[..., Any], scheme: str, *, gain: float = 1.0, seed: int = 0
) -> CheckResult:
    """Check a NumPy initializer ``fn(shape[, rng=...])`` against the statistics of ``scheme``.

    For each test shape — 2-D ``(fan_in, fan_out)`` (the chapter's NumPy convention), a wide one,
    and a convolution kernel ``(out, in, kh, kw)`` — it checks the shape, a zero mean, the variance
    the scheme prescribes (within 10 %), the distribution's family (uniform within ±a, or normal),
    and for "orthogonal" that the columns (or rows) are orthonormal up to ``gain``.

    Args:
        fn: the reader's initializer; given ``rng=np.random.default_rng(seed)`` if it accepts it.
        scheme: "xavier_uniform", "xavier_normal", "he_uniform", "he_normal" or "orthogonal".
        gain: the gain the reader's function uses (Xavier and orthogonal).

    Example:
        >>> from storyopt_lib.initializers import he_normal
        >>> check_init(he_normal, "he_normal").passed
        True
    """
    if scheme not in _INIT_SCHEMES:
        raise ValueError(f"Unknown scheme: scheme={scheme!r} (valid: {', '.join(_INIT_SCHEMES)})")
    if not callable(fn):
        raise TypeError(f"Invalid fn: {fn!r} (must be callable as fn(shape))")
    who = _name(fn)
    shapes = _INIT_SHAPES[:2] if scheme == "orthogonal" else _INIT_SHAPES
    ratios = []
    for shape in shapes:
        try:
            w = _call_init(fn, shape, seed)
        except Exception as exc:
            return _fail(
                f"{who}{shape} raised {type(exc).__name__}: {exc}.", where=f"shape {shape}"
            )
        where = f"shape {shape}"
        if w.shape != shape:
            return _fail(
                f"{who}{shape} returned shape {w.shape}: return an array of the shape asked for.",
                where,
            )
        if not np.isfinite(w).all():
            return _fail(f"{who}{shape} returned non-finite values.", where)
        expected = _expected_var(scheme, shape, gain)
        var, mean = float(w.var()), float(w.mean())
        if abs(mean) > 6 * math.sqrt(expected / w.size) + 1e-12:
            return _fail(
                f"{who}{shape} has mean {mean:.3g}, far from 0: initial weights must be centred.",
                where,
            )
        if scheme == "orthogonal":
            rows, cols = shape[0], math.prod(shape[1:])
            q = w.reshape(rows, cols)
            gram = q.T @ q if rows >= cols else q @ q.T
            err = float(np.abs(gram - gain**2 * np.eye(gram.shape[0])).max())
            if err > 1e-6 * max(1.0, gain**2):
                return _fail(
                    f"{who}{shape} is not orthogonal (max |QᵀQ − gain²·I| = {err:.3g}): "
                    "take Q from a QR (or SVD) of a Gaussian matrix of the taller orientation, "
                    "reshape, "
                    "and multiply by gain.",
                    where,
                )
            continue
        ratio = var / expected
        ratios.append(ratio)
        fan_in, fan_out = _fans(shape)
        if abs(ratio - 1) > 0.1:
            std = math.sqrt(expected)
            uniform = scheme.endswith("uniform")
            candidates = [
                (
                    2.0 / fan_out / expected if scheme.startswith("he") else math.nan,
                    "it uses fan_out where He uses fan_in (in the NumPy convention shape[0] is "
                    "fan_in; PyTorch's Linear weight is (out, in), the other way round).",
                ),
                (
                    1.0 / 3.0 if uniform else math.nan,
                    "it uses the standard deviation as the uniform bound: U(−a, a) has variance "
                    "a²/3, so a = √3·std.",
                ),
                (
                    3.0 if not uniform else math.nan,
                    "it uses the uniform bound a as the standard deviation: for a normal draw "
                    "std = a/√3.",
                ),
                (
                    expected if not uniform else math.nan,
                    "its variance is the square of the right one: did you forget a square root "
                    "in the standard deviation (or bound)?",
                ),
                (
                    (2.0 / (fan_in + fan_out)) / expected if scheme.startswith("he") else math.nan,
                    "it uses Xavier's 2/(fan_in + fan_out); He's variance for ReLU is 2/fan_in.",
                ),
                (
                    (2.0 / fan_in) / expected if scheme.startswith("xavier") else math.nan,
                    "it uses He's 2/fan_in; Xavier's variance is 2/(fan_in + fan_out).",
                ),
            ]
            advice = next(
                (s for r, s in candidates if math.isfinite(r) and abs(ratio / r - 1) < 0.1),
                f"the variance should be {expected:.4g} (std {std:.4g}) for {scheme}.",
            )
            return _fail(
                f"{who}{shape} has variance {var:.4g}, expected {expected:.4g} "
                f"(ratio {ratio:.3g}); {advice}",
                where,
                ratio=ratio,
            )
        kurtosis = float(((w - mean) ** 4).mean() / var**2)
        if scheme.endswith("uniform"):
            bound = math.sqrt(3 * expected)
            if np.abs(w).max() > bound * (1 + 1e-9) or kurtosis > 2.4:
                return _fail(
                    f"{who}{shape} is not uniform on (−a, a) with a = {bound:.4g} (largest "
                    f"|w| = {np.abs(w).max():.4g}, kurtosis {kurtosis:.2f}; uniform has 1.8): "
                    "draw with rng.uniform(-a, a, shape).",
                    where,
                )
        elif abs(kurtosis - 3.0) > 0.3:
            return _fail(
                f"{who}{shape} does not look normal (kurtosis {kurtosis:.2f}; a normal has 3): "
                "draw with rng.normal(0, std, shape).",
                where,
            )
    return _ok(
        f"{who} draws {scheme} weights: shapes, mean, variance and distribution as expected "
        f"on {len(shapes)} shapes.",
        ratios=ratios,
    )


# =============================================================================================
# Gradient accumulation
# =============================================================================================


class _TinyRegression(torch.nn.Module):
    """``model(x, y) -> (prediction, mean squared error)``, like the story model's interface."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(5, 2, generator=g, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = x @ self.weight + self.bias
        return pred, ((pred - y) ** 2).mean()


def _micro_batches(sizes: Sequence[int], seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        x = torch.randn(n, 5, generator=g, dtype=torch.float64)
        out.append((x, x[:, :2] * 2.0 - 1.0 + torch.randn(n, 2, generator=g, dtype=torch.float64)))
    return out


def _reference_accumulation(model, optimizer, micro_batches, flaw: str | None = None) -> None:
    """One update whose gradient is the mean loss over all samples (or a known mistake)."""
    total = sum(len(x) for x, _ in micro_batches)
    k = len(micro_batches)
    optimizer.zero_grad()
    batches = micro_batches
    if flaw == "drop_last" and k > 1 and len(micro_batches[-1][0]) < len(micro_batches[0][0]):
        batches, total, k = micro_batches[:-1], total - len(micro_batches[-1][0]), k - 1
    for x, y in batches:
        if flaw == "zero_each":
            optimizer.zero_grad()
        _, loss = model(x, y)
        weight = {"divide_by_k": 1.0 / k, "sum": 1.0, "drop_last": len(x) / total}.get(
            flaw or "", len(x) / total
        )
        (loss * weight).backward()
    optimizer.step()


_ACCUM_SENTENCES = {
    "divide_by_k": "it weights every micro-batch by 1/k; weight each micro-batch's mean loss by "
    "its share of the samples (n_i / N), because the last micro-batch is smaller.",
    "sum": "it adds the micro-batch losses without normalising: divide so that the gradient is "
    "that of the mean loss over all N samples.",
    "drop_last": "it drops the last, smaller micro-batch: every sample must contribute to the "
    "update.",
    "zero_each": "it clears the gradients before every micro-batch, so only the last one counts: "
    "call zero_grad() once per update, before the first micro-batch.",
    "no_zero": "it never clears the gradients, so the second update still carries the first "
    "one's: call zero_grad() once per update.",
}


@_single_threaded
def check_accumulation(fn: Callable[..., Any]) -> CheckResult:
    """Check ``fn(model, optimizer, micro_batches)``: one update from a list of micro-batches.

    ``model(x, y)`` returns ``(prediction, mean loss of that micro-batch)``. The update must equal
    one step on the whole batch: the gradient of the mean loss over all N samples. Two problems
    (two consecutive updates each, plain SGD so the update is η·gradient): micro-batch sizes
    [4, 4, 4, 4], and [8, 8, 8, 3], where the last group is smaller.

    Example:
        >>> from storyopt_lib.exercises import _reference_accumulation
        >>> check_accumulation(_reference_accumulation).passed
        True
    """
    if not callable(fn):
        raise TypeError(f"Invalid fn: {fn!r} (must be callable as fn(model, optimizer, batches))")
    who = _name(fn)

    def run(step_fn: Callable[..., Any], sizes: Sequence[int]) -> list[torch.Tensor]:
        model = _TinyRegression()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        out = []
        for update in range(2):
            step_fn(model, optimizer, _micro_batches(sizes, seed=10 + update))
            out.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        return out

    def no_zero(model, optimizer, micro_batches):
        total = sum(len(x) for x, _ in micro_batches)
        for x, y in micro_batches:
            _, loss = model(x, y)
            (loss * len(x) / total).backward()
        optimizer.step()

    flaws: dict[str, Callable[..., Any]] = {
        f: (lambda m, o, b, f=f: _reference_accumulation(m, o, b, f))
        for f in ("divide_by_k", "sum", "drop_last", "zero_each")
    }
    flaws["no_zero"] = no_zero
    problems = {
        "equal micro-batches [4, 4, 4, 4]": (4, 4, 4, 4),
        "last one smaller [8, 8, 8, 3]": (8, 8, 8, 3),
    }
    got, ref = {}, {}
    for name, sizes in problems.items():
        try:
            got[name] = run(fn, sizes)
        except Exception as exc:
            return _fail(f"{who} raised {type(exc).__name__}: {exc} ({name}).", where=name)
        ref[name] = run(_reference_accumulation, sizes)

    def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
        return all(torch.allclose(x, y, rtol=RTOL, atol=ATOL) for x, y in zip(a, b, strict=True))

    for name in problems:
        for update, (a, b) in enumerate(zip(got[name], ref[name], strict=True), start=1):
            if torch.allclose(a, b, rtol=RTOL, atol=ATOL):
                continue
            where = f"{name}, update {update}"
            err = float((a - b).abs().max())
            head = f"{who} differs from one full-batch step at {where} (max |Δθ| = {err:.3g}); "
            for flaw, flawed_fn in flaws.items():
                if all(same(got[n], run(flawed_fn, s)) for n, s in problems.items()):
                    return _fail(head + _ACCUM_SENTENCES[flaw], where=where, flaw=flaw)
            return _fail(
                head + "the accumulated gradient must be ∇ of (1/N)·Σ over all N samples of the "
                "loss; scale each micro-batch's mean loss by n_i / N before backward().",
                where=where,
                flaw=None,
            )
    return _ok(f"{who} gives the full-batch update, also when the last micro-batch is smaller.")
