"""Optimizers from scratch, checked against ``torch.optim``; parameter groups; state memory.

Each algorithm is one short update rule on one array (a NumPy array or a torch tensor, updated
in place) with the hyperparameter names, defaults and semantics of the same-named ``torch.optim``
class. The classes ``SGD``, ``Adagrad``, ``RMSprop``, ``Adam``, ``AdamW`` loop the rule over a
list of arrays (``opt.step(grads)``); ``ScratchOptimizer`` runs the same rule as a
``torch.optim.Optimizer`` so it can train a real model and be driven by LR schedulers.

Also kept for the book: the source chapter's momentum form (``sgd_momentum_seed_form``, velocity
holds lr · gradient) and its look-ahead Nesterov (``nesterov_lookahead_step``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .initializers import NORM_TYPES

__all__ = [
    "OPTIMIZER_NAMES",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "RMSprop",
    "ScratchOptimizer",
    "adagrad_update",
    "adam_update",
    "adamw_update",
    "create_optimizer",
    "describe_param_groups",
    "get_algorithm",
    "name_rule_no_decay",
    "nesterov_lookahead_step",
    "param_groups",
    "rmsprop_update",
    "sgd_momentum_seed_form",
    "sgd_update",
    "state_bytes",
]

Array = Any  # np.ndarray or torch.Tensor


def _zeros_like(x: Array) -> Array:
    return torch.zeros_like(x) if isinstance(x, torch.Tensor) else np.zeros_like(x)


def _copy(x: Array) -> Array:
    return x.clone() if isinstance(x, torch.Tensor) else x.copy()


def _xp(x: Array) -> Any:
    """The array library of ``x``: torch or NumPy name the functions used here alike
    (``multiply``, ``subtract``, ``divide``, ``sqrt``) and both take ``out=``."""
    return torch if isinstance(x, torch.Tensor) else np


# Why a workspace: written as plain expressions (``param -= lr * grad``) each rule would allocate
# a few parameter-sized temporaries per step, and with glibc's default malloc every one of them
# page-faults its memory back in; that, not arithmetic, made a step 3-6x slower than torch.optim
# (benchmarks/bench_optimizers.py). So the rules write intermediates into two scratch arrays,
# ``workspace`` of shape (2, *param.shape), with in-place operators and ``out=``. The wrappers keep
# one buffer per array type, dtype and device, shared by all parameters: scratch, not optimizer
# state (not saved in ``state_dict``, not counted by ``state_bytes``).


def _workspace(like: Array, cache: dict | None = None) -> Array:
    """Scratch of shape (2, *like.shape), a view of a buffer in ``cache`` (grown as needed)."""
    n = 2 * math.prod(like.shape)
    key = (type(like), like.dtype, getattr(like, "device", None))
    flat = None if cache is None else cache.get(key)
    if flat is None or flat.shape[0] < n:
        if isinstance(like, torch.Tensor):
            flat = torch.empty(n, dtype=like.dtype, device=like.device)
        else:
            flat = np.empty(n, dtype=like.dtype)
        if cache is not None:
            cache[key] = flat
    return flat[:n].reshape(2, *like.shape)


def _with_l2(grad: Array, param: Array, weight_decay: float, out: Array) -> Array:
    """g + λθ, written into ``out`` (the caller's ``grad`` is left as it is)."""
    _xp(param).multiply(param, weight_decay, out=out)
    out += grad
    return out


def _descend(param: Array, lr: float, direction: Array, tmp: Array) -> None:
    """θ ← θ − η d in place: one fused pass in torch (``add_`` with ``alpha``, as torch.optim
    does); NumPy has no fused form, so η d goes through ``tmp`` (may be ``direction`` itself)."""
    if isinstance(param, torch.Tensor):
        param.add_(direction, alpha=-lr)
    else:
        param -= np.multiply(direction, lr, out=tmp)


# ---------------------------------------------------------------------------------------------
# Update rules: one array, in place. The state arrays are updated in place too.
# ---------------------------------------------------------------------------------------------


def sgd_update(
    param: Array,
    grad: Array,
    momentum_buffer: Array | None,
    *,
    lr: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    workspace: Array | None = None,
) -> Array | None:
    """SGD with momentum, PyTorch's form (dampening 0); returns the momentum buffer.

    g ← g + λθ;  b ← μb + g (b = g on the first step);  d = g + μb if Nesterov else b;
    θ ← θ − η d.  Symbols: η ``lr``, μ ``momentum``, λ ``weight_decay`` (L2 added to the
    gradient), b ``momentum_buffer``. The buffer holds gradients, not steps, so a new η applies
    to the whole buffer at once (``sgd_momentum_seed_form`` differs exactly there).
    ``workspace``: optional scratch of shape (2, *param.shape) for intermediates (overwritten).
    """
    tmp, l2_grad = workspace if workspace is not None else _workspace(param)
    if weight_decay != 0:
        grad = _with_l2(grad, param, weight_decay, out=l2_grad)
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = _copy(grad)
        else:
            momentum_buffer *= momentum
            momentum_buffer += grad
        if nesterov:  # θ ← θ − ηg − ημb: two steps, so d = g + μb needs no array of its own
            _descend(param, lr, grad, tmp)
            _descend(param, lr * momentum, momentum_buffer, tmp)
            return momentum_buffer
        grad = momentum_buffer
    _descend(param, lr, grad, tmp)
    return momentum_buffer


def sgd_momentum_seed_form(
    param: Array, grad: Array, velocity: Array, *, lr: float, momentum: float = 0.9
) -> None:
    """The source chapter's momentum: v ← γv + ηg;  θ ← θ − v.

    γ is ``momentum``, η ``lr``. With a constant η, v = η b and the iterates equal
    ``sgd_update``'s (PyTorch). When η changes, v still carries the old η's steps, while PyTorch
    multiplies the whole buffer b by the new η: the two trajectories part.
    """
    velocity *= momentum
    velocity += lr * grad
    param -= velocity


def nesterov_lookahead_step(
    param: Array,
    grad_fn: Callable[[Array], Array],
    velocity: Array,
    *,
    lr: float,
    momentum: float = 0.9,
) -> None:
    """The source chapter's Nesterov: g = ∇f(θ − γv);  v ← γv + ηg;  θ ← θ − v.

    PyTorch avoids the look-ahead gradient by tracking φ = θ − γv instead of θ: substituting gives
    φ ← φ − η[(1 + γ)g(φ) + γ² b] with b = v/η, which is ``sgd_update(nesterov=True)``
    (b ← γb + g; φ ← φ − η(g + γb)). So the look-ahead points φ follow PyTorch's iterates.
    """
    grad = grad_fn(param - momentum * velocity)
    velocity *= momentum
    velocity += lr * grad
    param -= velocity


def adagrad_update(
    param: Array,
    grad: Array,
    state_sum: Array,
    step: int,
    *,
    lr: float,
    lr_decay: float = 0.0,
    eps: float = 1e-10,
    weight_decay: float = 0.0,
    workspace: Array | None = None,
) -> None:
    """Adagrad (Duchi et al. 2011), PyTorch's form (ε outside the square root).

    g ← g + λθ;  η_t = η / (1 + (t − 1)·δ);  s ← s + g²;  θ ← θ − η_t g / (√s + ε).
    Symbols: η ``lr``, δ ``lr_decay``, ε ``eps``, λ ``weight_decay``, s ``sum`` (starts at
    ``initial_accumulator_value``), t the 1-based ``step``.
    ``workspace``: optional scratch of shape (2, *param.shape) for intermediates (overwritten).
    """
    xp = _xp(param)
    tmp, l2_grad = workspace if workspace is not None else _workspace(param)
    if weight_decay != 0:
        grad = _with_l2(grad, param, weight_decay, out=l2_grad)
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum += xp.multiply(grad, grad, out=tmp)
    std = xp.sqrt(state_sum, out=tmp)
    std += eps
    _descend(param, clr, xp.divide(grad, std, out=tmp), tmp)


def rmsprop_update(
    param: Array,
    grad: Array,
    square_avg: Array,
    *,
    lr: float,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    workspace: Array | None = None,
) -> None:
    """RMSprop (Hinton 2012), non-centered, no momentum; ε outside the square root (PyTorch).

    g ← g + λθ;  v ← αv + (1 − α)g²;  θ ← θ − η g / (√v + ε).
    Symbols: η ``lr``, α ``alpha`` (the source chapter's β), ε ``eps``, λ ``weight_decay``,
    v ``square_avg``.
    ``workspace``: optional scratch of shape (2, *param.shape) for intermediates (overwritten).
    """
    xp = _xp(param)
    tmp, l2_grad = workspace if workspace is not None else _workspace(param)
    if weight_decay != 0:
        grad = _with_l2(grad, param, weight_decay, out=l2_grad)
    square_avg *= alpha
    grad_sq = xp.multiply(grad, grad, out=tmp)
    grad_sq *= 1 - alpha
    square_avg += grad_sq
    avg = xp.sqrt(square_avg, out=tmp)
    avg += eps
    _descend(param, lr, xp.divide(grad, avg, out=tmp), tmp)


def adam_update(
    param: Array,
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    step: int,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    workspace: Array | None = None,
) -> None:
    """Adam (Kingma & Ba 2015), as PyTorch's single-tensor implementation.

    g ← g + λθ (L2, coupled);  m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;
    θ ← θ − (η / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε).
    Symbols: η ``lr``, (β₁, β₂) ``betas``, ε ``eps``, λ ``weight_decay``, m ``exp_avg``,
    v ``exp_avg_sq``, t the 1-based ``step``. As in PyTorch, ε is added to √v / √(1 − β₂ᵗ)
    (= √v̂ of the paper) and the β₁ correction is folded into the step size.
    ``workspace``: optional scratch of shape (2, *param.shape) for intermediates (overwritten).
    """
    xp = _xp(param)
    tmp, l2_grad = workspace if workspace is not None else _workspace(param)
    beta1, beta2 = betas
    if weight_decay != 0:
        grad = _with_l2(grad, param, weight_decay, out=l2_grad)
    diff = xp.subtract(grad, exp_avg, out=tmp)
    diff *= 1 - beta1
    exp_avg += diff  # = β₁m + (1 − β₁)g, rounded as torch's lerp_
    grad_sq = xp.multiply(grad, grad, out=tmp)
    grad_sq *= 1 - beta2
    exp_avg_sq *= beta2
    exp_avg_sq += grad_sq
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    # PyTorch's order of operations: rounding differences compound over steps where v is tiny.
    denom = xp.sqrt(exp_avg_sq, out=tmp)
    denom /= bias_correction2**0.5
    denom += eps
    _descend(param, step_size, xp.divide(exp_avg, denom, out=tmp), tmp)


def adamw_update(
    param: Array,
    grad: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    step: int,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    workspace: Array | None = None,
) -> None:
    """AdamW (Loshchilov & Hutter 2019): decoupled decay θ ← θ(1 − ηλ), then an Adam step.

    λ is ``weight_decay``, applied to θ directly, not added to g: unlike L2 inside Adam it is not
    divided by √v, so every weight decays at the same relative rate ηλ per step.
    ``workspace``: optional scratch of shape (2, *param.shape) for intermediates (overwritten).
    """
    if weight_decay != 0:
        param *= 1 - lr * weight_decay
    adam_update(
        param, grad, exp_avg, exp_avg_sq, step, lr=lr, betas=betas, eps=eps, workspace=workspace
    )


# ---------------------------------------------------------------------------------------------
# Hyperparameter checks (shared by the list optimizers and ScratchOptimizer)
# ---------------------------------------------------------------------------------------------


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"Invalid {name}: {name}={value!r} (must be a number)")
    return float(value)


def _check_lr(lr: Any) -> float:
    lr = _number("lr", lr)
    if not (lr >= 0 and math.isfinite(lr)):
        raise ValueError(f"Invalid learning rate: lr={lr} (must be finite and >= 0)")
    return lr


def _check_hparams(defaults: dict[str, Any], hparams: dict[str, Any], owner: str) -> dict:
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise TypeError(
            f"Invalid hyperparameter for {owner}: {unknown[0]}={hparams[unknown[0]]!r} "
            f"(valid: {', '.join(defaults)})"
        )
    hp = {**defaults, **hparams}
    hp["lr"] = _check_lr(hp["lr"])
    for name in ("momentum", "weight_decay", "lr_decay", "initial_accumulator_value"):
        if name in hp:
            value = _number(name, hp[name])
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"Invalid {name}: {name}={value} (must be finite and >= 0)")
            hp[name] = value
    if "eps" in hp:
        eps = _number("eps", hp["eps"])
        if not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"Invalid eps: eps={eps} (must be > 0)")
        hp["eps"] = eps
    if "alpha" in hp:
        alpha = _number("alpha", hp["alpha"])
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"Invalid alpha: alpha={alpha} (must be in [0, 1))")
        hp["alpha"] = alpha
    if "betas" in hp:
        betas = hp["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"Invalid betas: betas={betas!r} (must be a pair (beta1, beta2))")
        for i, beta in enumerate(betas):
            beta = _number(f"betas[{i}]", beta)
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta: betas[{i}]={beta} (must be in [0, 1))")
        hp["betas"] = (float(betas[0]), float(betas[1]))
    if "nesterov" in hp:
        if not isinstance(hp["nesterov"], bool):
            raise TypeError(f"Invalid nesterov: nesterov={hp['nesterov']!r} (must be a bool)")
        if hp["nesterov"] and hp["momentum"] == 0:
            raise ValueError(
                f"Invalid nesterov: nesterov=True with momentum={hp['momentum']} "
                "(Nesterov needs momentum > 0)"
            )
    return hp


# ---------------------------------------------------------------------------------------------
# The list optimizers: params is a list of arrays, step(grads) updates them in place
# ---------------------------------------------------------------------------------------------


class _FromScratch:
    """Common wrapper: checks input, keeps per-parameter state, calls ``update``."""

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Iterable[Array], **hparams: Any) -> None:
        self.hparams = _check_hparams(self.defaults, hparams, type(self).__name__)
        params = list(params)
        for i, p in enumerate(params):
            _check_array(f"params[{i}]", p)
        self.params = params
        self.state: list[dict[str, Any]] = [{} for _ in params]
        self.workspaces: dict = {}  # scratch shared by all parameters, see ``_workspace``

    @property
    def lr(self) -> float:
        return self.hparams["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.hparams["lr"] = _check_lr(value)

    def step(self, grads: Sequence[Array]) -> None:
        """Update every parameter in place with its gradient (same order as ``params``)."""
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(
                f"Invalid grads: len(grads)={len(grads)} (expected one per parameter: "
                f"{len(self.params)})"
            )
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            _check_array(f"grads[{i}]", g)
            if tuple(g.shape) != tuple(p.shape) or type(g) is not type(p):
                raise ValueError(
                    f"Invalid grads[{i}]: {type(g).__name__} of shape {tuple(g.shape)} "
                    f"(expected {type(p).__name__} of shape {tuple(p.shape)})"
                )
        with torch.no_grad():
            for p, g, state in zip(self.params, grads, self.state, strict=True):
                self.update(p, g, state, self.hparams, _workspace(p, self.workspaces))

    @staticmethod
    def update(param: Array, grad: Array, state: dict, hp: dict, workspace: Array) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args})"


def _check_array(name: str, x: Any) -> None:
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"Invalid {name}: dtype={x.dtype} (must be floating point)")
    elif isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(f"Invalid {name}: dtype={x.dtype} (must be floating point)")
    else:
        raise TypeError(f"Invalid {name}: {type(x).__name__} (must be a numpy array or tensor)")


class SGD(_FromScratch):
    """SGD, momentum, Nesterov from scratch (rule: ``sgd_update``); state ``momentum_buffer``.

    Example:
        >>> x = np.array([1.0, -2.0])
        >>> opt = SGD([x], lr=0.1, momentum=0.9)
        >>> opt.step([2 * x])
    """

    defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-3,
        "momentum": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
    }

    def __init__(
        self,
        params: Iterable[Array],
        lr: float = 1e-3,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )

    @staticmethod
    def update(param: Array, grad: Array, state: dict, hp: dict, workspace: Array) -> None:
        buf = sgd_update(param, grad, state.get("momentum_buffer"), **hp, workspace=workspace)
        if buf is not None:
            state["momentum_buffer"] = buf


class Adagrad(_FromScratch):
    """Adagrad from scratch (rule: ``adagrad_update``); state ``sum``, ``step``."""

    defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-2,
        "lr_decay": 0.0,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "eps": 1e-10,
    }

    def __init__(
        self,
        params: Iterable[Array],
        lr: float = 1e-2,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        lr_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            eps=eps,
            weight_decay=weight_decay,
            lr_decay=lr_decay,
            initial_accumulator_value=initial_accumulator_value,
        )

    @staticmethod
    def update(param: Array, grad: Array, state: dict, hp: dict, workspace: Array) -> None:
        if not state:
            state["step"] = 0
            state["sum"] = _zeros_like(param) + hp["initial_accumulator_value"]
        state["step"] += 1
        adagrad_update(
            param,
            grad,
            state["sum"],
            state["step"],
            lr=hp["lr"],
            lr_decay=hp["lr_decay"],
            eps=hp["eps"],
            weight_decay=hp["weight_decay"],
            workspace=workspace,
        )


class RMSprop(_FromScratch):
    """RMSprop from scratch (rule: ``rmsprop_update``); state ``square_avg``."""

    defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-2,
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.0,
    }

    def __init__(
        self,
        params: Iterable[Array],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay)

    @staticmethod
    def update(param: Array, grad: Array, state: dict, hp: dict, workspace: Array) -> None:
        if not state:
            state["step"] = 0
            state["square_avg"] = _zeros_like(param)
        state["step"] += 1
        rmsprop_update(param, grad, state["square_avg"], **hp, workspace=workspace)


class Adam(_FromScratch):
    """Adam from scratch (rule: ``adam_update``); state ``exp_avg``, ``exp_avg_sq``, ``step``."""

    defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
    }
    _rule = staticmethod(adam_update)

    def __init__(
        self,
        params: Iterable[Array],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    @classmethod
    def update(cls, param: Array, grad: Array, state: dict, hp: dict, workspace: Array) -> None:
        if not state:
            state["step"] = 0
            state["exp_avg"] = _zeros_like(param)
            state["exp_avg_sq"] = _zeros_like(param)
        state["step"] += 1
        m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        cls._rule(param, grad, m, v, t, **hp, workspace=workspace)


class AdamW(Adam):
    """AdamW from scratch (rule: ``adamw_update``, decoupled weight decay; default 1e-2)."""

    defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 1e-2,
    }
    _rule = staticmethod(adamw_update)

    def __init__(
        self,
        params: Iterable[Array],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


SCRATCH_ALGORITHMS: dict[str, type[_FromScratch]] = {
    "sgd": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
}


def get_algorithm(algorithm: str | type) -> type[_FromScratch]:
    """The from-scratch class for a name ("sgd", "adamw", ...) or the class itself."""
    if isinstance(algorithm, type) and algorithm in SCRATCH_ALGORITHMS.values():
        return algorithm
    if isinstance(algorithm, str) and algorithm.lower() in SCRATCH_ALGORITHMS:
        return SCRATCH_ALGORITHMS[algorithm.lower()]
    raise ValueError(
        f"Unknown algorithm: algorithm={algorithm!r} (valid: {', '.join(SCRATCH_ALGORITHMS)})"
    )


class ScratchOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose update is one of the from-scratch rules.

    Param groups, ``zero_grad``, ``state_dict`` and LR schedulers work as for any torch optimizer;
    the state keys are PyTorch's (``momentum_buffer``, ``sum``, ``square_avg``, ``exp_avg``,
    ``exp_avg_sq``; ``step`` is a Python int).

    Args:
        params: parameters or param-group dicts (e.g. ``param_groups(model, 0.1)``).
        algorithm: "sgd", "adagrad", "rmsprop", "adam", "adamw" or one of the classes.
        **hparams: that algorithm's hyperparameters (PyTorch names and defaults).

    Example:
        >>> model = nn.Linear(3, 1)
        >>> opt = ScratchOptimizer(model.parameters(), "adamw", lr=1e-3)
    """

    def __init__(self, params: Iterable, algorithm: str | type = "adamw", **hparams: Any) -> None:
        self.algorithm = get_algorithm(algorithm)
        defaults = _check_hparams(self.algorithm.defaults, hparams, self.algorithm.__name__)
        super().__init__(params, defaults)
        self.workspaces: dict = {}  # scratch shared by all parameters, see ``_workspace``

    def __getstate__(self) -> dict[str, Any]:
        # torch's keeps defaults, state and param_groups; copies also need the rule (not scratch)
        return {**super().__getstate__(), "algorithm": self.algorithm}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.workspaces = {}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        hp = {k: v for k, v in param_group.items() if k in self.defaults}
        # Check the group's own values before torch stores the group.
        _check_hparams(self.defaults, {**self.defaults, **hp}, self.algorithm.__name__)
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            hp = _check_hparams(
                self.algorithm.defaults,
                {k: group[k] for k in self.algorithm.defaults},
                self.algorithm.__name__,
            )
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise TypeError("Invalid grad: sparse gradients are not supported")
                workspace = _workspace(p, self.workspaces)
                self.algorithm.update(p, p.grad, self.state[p], hp, workspace)
        return loss


# ---------------------------------------------------------------------------------------------
# Parameter groups, torch optimizers, state memory
# ---------------------------------------------------------------------------------------------


def _decay_table(model: nn.Module) -> list[tuple[str, nn.Parameter, bool]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"Invalid model: model={type(model).__name__} (must be an nn.Module)")
    rows, seen = [], set()
    for module_name, module in model.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue  # tied weights appear once, under their first name
            seen.add(id(p))
            no_decay = p.ndim < 2 or isinstance(module, NORM_TYPES) or attr == "bias"
            rows.append((f"{module_name}.{attr}" if module_name else attr, p, not no_decay))
    return rows


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """[decay group, no-decay group] chosen by structure, not by name.

    No decay for: biases, parameters of normalization modules (LayerNorm, RMSNorm, GroupNorm,
    BatchNorm), and every parameter with fewer than 2 dimensions; everything else (Linear and
    Embedding matrices) decays with ``weight_decay``. The source chapter's rule
    (``name_rule_no_decay``) matches substrings like ``'layernorm'`` and so silently decays norms
    named ``ln_1`` or ``norm``.

    Example:
        >>> groups = param_groups(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), 0.1)
        >>> [len(g["params"]) for g in groups]
        [1, 3]
    """
    value = _number("weight_decay", weight_decay)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"Invalid weight_decay: weight_decay={value} (must be >= 0)")
    rows = _decay_table(model)
    return [
        {"params": [p for _, p, decays in rows if decays], "weight_decay": value},
        {"params": [p for _, p, decays in rows if not decays], "weight_decay": 0.0},
    ]


def describe_param_groups(model: nn.Module) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, shape, decays) for every trainable parameter, as ``param_groups`` decides."""
    return [(name, tuple(p.shape), decays) for name, p, decays in _decay_table(model)]


def name_rule_no_decay(name: str) -> bool:
    """The source chapter's rule: no decay if ``name`` has 'bias', 'layernorm' or 'layer_norm'."""
    return any(nd in name for nd in ("bias", "layernorm", "layer_norm"))


OPTIMIZER_NAMES = ("sgd", "adagrad", "rmsprop", "adam", "adamw", "adafactor")


def create_optimizer(
    model: nn.Module,
    name: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    **hparams: Any,
) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer ``name`` over ``param_groups(model, weight_decay)``.

    For "sgd", "adagrad", "rmsprop", "adam" weight decay is L2 added to the gradient (PyTorch's
    semantics); for "adamw" and "adafactor" (``torch.optim.Adafactor``) it is decoupled.

    Example:
        >>> opt = create_optimizer(nn.Linear(4, 2), "adamw", lr=3e-4, weight_decay=0.1)
    """
    classes = {
        "sgd": torch.optim.SGD,
        "adagrad": torch.optim.Adagrad,
        "rmsprop": torch.optim.RMSprop,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "adafactor": getattr(torch.optim, "Adafactor", None),
    }
    key = name.lower() if isinstance(name, str) else name
    if key not in classes:
        raise ValueError(f"Unknown optimizer: name={name!r} (valid: {', '.join(OPTIMIZER_NAMES)})")
    if classes[key] is None:
        raise ValueError("Unknown optimizer: name='adafactor' needs torch >= 2.5")
    lr = _check_lr(lr)
    groups = param_groups(model, weight_decay)
    groups = [g for g in groups if g["params"]]
    return classes[key](groups, lr=lr, **hparams)


def state_bytes(optimizer: Any) -> int:
    """Bytes held in optimizer state: every tensor/array with at least one dimension.

    0-dim step counters (a few bytes per parameter tensor in ``torch.optim``) are not counted, so
    SGD gives 0, SGD with momentum 1× the parameter bytes and Adam/AdamW 2× after the first step.
    Works for ``torch.optim`` optimizers and for the from-scratch list optimizers.
    """
    if isinstance(optimizer, torch.optim.Optimizer):
        states = list(optimizer.state.values())
    elif isinstance(optimizer, _FromScratch):
        states = optimizer.state
    else:
        raise TypeError(f"Invalid optimizer: optimizer={type(optimizer).__name__}")
    total = 0
    for state in states:
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.ndim >= 1:
                total += value.numel() * value.element_size()
            elif isinstance(value, np.ndarray) and value.ndim >= 1:
                total += value.nbytes
    return total
