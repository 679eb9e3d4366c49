"""Weight initializers: the chapter's NumPy functions and ``init_weights`` for PyTorch modules.

NumPy convention (the source chapter's): a 2-D ``shape`` is ``(fan_in, fan_out)``, so ``x @ W``
maps ``fan_in`` inputs to ``fan_out`` outputs. PyTorch's ``nn.Linear.weight`` is ``(out, in)``:
the same fans, the other order. For 3-D and larger shapes (convolution kernels) both use
PyTorch's ``(out_channels, in_channels, *kernel)``.

Every random initializer takes ``rng``, a ``numpy.random.Generator``; a fresh unseeded one is used
when it is omitted, so pass ``np.random.default_rng(seed)`` for reproducible arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "INIT_SCHEMES",
    "constant",
    "get_fans",
    "he_normal",
    "he_uniform",
    "init_weights",
    "normal",
    "orthogonal",
    "uniform",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]

INIT_SCHEMES = ("normal", "xavier", "kaiming", "orthogonal", "gpt2")

# Normalization layers: weight 1 and bias 0 in every init scheme; never weight-decayed
# (optimizers.param_groups uses the same tuple).
NORM_TYPES: tuple[type, ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,
)
if hasattr(nn, "RMSNorm"):
    NORM_TYPES = (*NORM_TYPES, nn.RMSNorm)


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in shape)
    except TypeError:
        raise TypeError(f"Invalid shape: shape={shape!r} (must be a sequence of ints)") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"Invalid shape: shape={shape!r} (dimensions must be >= 0)")
    return dims


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng()
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"Invalid rng: rng={rng!r} (must be a numpy.random.Generator, "
            "e.g. np.random.default_rng(0))"
        )
    return rng


def zeros(shape: Sequence[int]) -> np.ndarray:
    """All zeros. Fine for biases; for weights every unit stays identical (no symmetry breaking)."""
    return np.zeros(_check_shape(shape))


def constant(shape: Sequence[int], value: float) -> np.ndarray:
    """Every entry equal to ``value``: the same symmetry problem as ``zeros``."""
    return np.full(_check_shape(shape), float(value))


def uniform(
    shape: Sequence[int],
    low: float = -0.1,
    high: float = 0.1,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """W ~ U(low, high), ignoring the layer's fans.

    Example:
        >>> uniform((3, 4), rng=np.random.default_rng(0)).shape
        (3, 4)
    """
    if not low <= high:
        raise ValueError(f"Invalid bounds: low={low}, high={high} (need low <= high)")
    return _rng(rng).uniform(low, high, _check_shape(shape))


def normal(
    shape: Sequence[int],
    mean: float = 0.0,
    std: float = 0.01,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """W ~ N(mean, std²), ignoring the layer's fans."""
    if not std >= 0:
        raise ValueError(f"Invalid std: std={std} (must be >= 0)")
    return _rng(rng).normal(mean, std, _check_shape(shape))


def get_fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shape.

    2-D: ``shape = (fan_in, fan_out)`` (NumPy ``x @ W``). k-D, k >= 3 (convolution,
    PyTorch's ``(out, in, *kernel)``): fan_in = in · r, fan_out = out · r with r = prod(kernel).
    A 1-D or empty shape has no fans: the source chapter guessed ``sqrt(shape[0])`` there; we
    raise instead.

    Example:
        >>> get_fans((256, 64))
        (256, 64)
    """
    dims = _check_shape(shape)
    if len(dims) < 2:
        raise ValueError(
            f"Invalid shape for fans: shape={tuple(shape)!r} (need at least 2 dimensions; "
            "1-D and empty shapes have no fan_in/fan_out)"
        )
    if len(dims) == 2:
        fan_in, fan_out = dims
    else:
        receptive_field = math.prod(dims[2:])
        fan_in, fan_out = dims[1] * receptive_field, dims[0] * receptive_field
    if fan_in == 0 or fan_out == 0:
        raise ValueError(f"Invalid shape for fans: shape={tuple(shape)!r} (a fan is 0)")
    return fan_in, fan_out


def xavier_uniform(
    shape: Sequence[int], gain: float = 1.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Glorot & Bengio (2010): W ~ U(-a, a), a = gain · sqrt(6 / (fan_in + fan_out)).

    Variance a²/3 = gain² · 2 / (fan_in + fan_out), as ``torch.nn.init.xavier_uniform_``.
    """
    fan_in, fan_out = get_fans(shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _rng(rng).uniform(-a, a, _check_shape(shape))


def xavier_normal(
    shape: Sequence[int], gain: float = 1.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """W ~ N(0, std²), std = gain · sqrt(2 / (fan_in + fan_out)) (``xavier_normal_``)."""
    fan_in, fan_out = get_fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _rng(rng).normal(0.0, std, _check_shape(shape))


def he_uniform(shape: Sequence[int], rng: np.random.Generator | None = None) -> np.ndarray:
    """He et al. (2015), for ReLU: W ~ U(-a, a), a = sqrt(6 / fan_in).

    Variance 2 / fan_in, as ``kaiming_uniform_(w, nonlinearity="relu")`` (mode ``fan_in``).
    """
    fan_in, _ = get_fans(shape)
    a = math.sqrt(6.0 / fan_in)
    return _rng(rng).uniform(-a, a, _check_shape(shape))


def he_normal(shape: Sequence[int], rng: np.random.Generator | None = None) -> np.ndarray:
    """W ~ N(0, std²), std = sqrt(2 / fan_in) (``kaiming_normal_(w, nonlinearity="relu")``)."""
    fan_in, _ = get_fans(shape)
    std = math.sqrt(2.0 / fan_in)
    return _rng(rng).normal(0.0, std, _check_shape(shape))


def orthogonal(
    shape: Sequence[int], gain: float = 1.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Saxe et al. (2014): W = gain · Q with orthonormal columns (tall) or rows (wide).

    The shape is flattened to (rows, cols) = (shape[0], prod(shape[1:])). With A ~ N(0, 1) of the
    taller orientation, A = QR and Q ← Q · sign(diag R) (so Q is uniformly distributed, as
    ``torch.nn.init.orthogonal_`` does); then QᵀQ = I if rows >= cols, else QQᵀ = I.

    Example:
        >>> q = orthogonal((4, 4), rng=np.random.default_rng(0))
        >>> bool(np.allclose(q.T @ q, np.eye(4)))
        True
    """
    dims = _check_shape(shape)
    if len(dims) < 2:
        raise ValueError(f"Invalid shape for orthogonal: shape={tuple(shape)!r} (need >= 2 dims)")
    rows, cols = dims[0], math.prod(dims[1:])
    if rows == 0 or cols == 0:
        raise ValueError(f"Invalid shape for orthogonal: shape={tuple(shape)!r} (empty)")
    a = _rng(rng).normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)  # q: (max, min), orthonormal columns
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q.reshape(dims)


def _init_linear_like(weight: torch.Tensor, scheme: str, std: float) -> None:
    if scheme in ("normal", "gpt2"):
        nn.init.normal_(weight, mean=0.0, std=std)
    elif scheme == "xavier":
        nn.init.xavier_uniform_(weight)
    elif scheme == "kaiming":
        nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
    else:  # orthogonal
        nn.init.orthogonal_(weight)


@torch.no_grad()
def init_weights(
    module: nn.Module, scheme: str, *, std: float = 0.02, n_layer: int | None = None
) -> nn.Module:
    """Initialise every submodule of ``module`` in place and return it.

    - ``nn.Linear`` weights: "normal"/"gpt2" N(0, std²); "xavier" ``xavier_uniform_``;
      "kaiming" ``kaiming_normal_`` (fan_in, ReLU); "orthogonal" ``orthogonal_``.
    - ``nn.Embedding`` weights: N(0, std²) in every scheme; biases 0; normalization layers
      (LayerNorm, RMSNorm, GroupNorm, BatchNorm) weight 1, bias 0.
    - "gpt2" (Radford et al. 2019): every ``nn.Linear`` with ``is_residual_projection = True``
      (the attention and MLP output projections that add into the residual stream) gets
      std / sqrt(2 · n_layer), since each of the 2 · n_layer residual branches adds variance.
    - Tied weights (an ``lm_head`` sharing the embedding matrix) are initialised once, as the
      embedding: the source chapter's extra ``lm_head`` std 0.02/sqrt(2) is not GPT-2's scheme.

    Args:
        module: the model (or any ``nn.Module``).
        scheme: one of ``INIT_SCHEMES``.
        std: standard deviation of the normal schemes (GPT-2 uses 0.02).
        n_layer: number of transformer blocks; required by "gpt2" when residual projections exist.

    Example:
        >>> net = init_weights(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), "gpt2")
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"Invalid module: module={type(module).__name__} (must be an nn.Module)")
    if scheme not in INIT_SCHEMES:
        raise ValueError(
            f"Unknown init scheme: scheme={scheme!r} (valid: {', '.join(INIT_SCHEMES)})"
        )
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std >= 0):
        raise ValueError(f"Invalid std: std={std!r} (must be a finite number >= 0)")
    has_residual = any(
        isinstance(m, nn.Linear) and getattr(m, "is_residual_projection", False)
        for m in module.modules()
    )
    if scheme == "gpt2" and has_residual:
        if n_layer is None:
            raise ValueError(
                "Invalid n_layer: n_layer=None (required by scheme='gpt2' when the model has "
                "layers with is_residual_projection=True)"
            )
        if isinstance(n_layer, bool) or not isinstance(n_layer, int) or n_layer < 1:
            raise ValueError(f"Invalid n_layer: n_layer={n_layer!r} (must be an int >= 1)")

    done: set[int] = set()  # ids of parameters already initialised (tied weights once)

    def once(p: torch.Tensor | None) -> bool:
        if p is None or id(p) in done:
            return False
        done.add(id(p))
        return True

    modules = list(module.modules())
    # Embeddings first, so a tied lm_head keeps the embedding's initialisation.
    for m in modules:
        if isinstance(m, nn.Embedding) and once(m.weight):
            nn.init.normal_(m.weight, mean=0.0, std=std)
    for m in modules:
        if isinstance(m, nn.Linear):
            if once(m.weight):
                if scheme == "gpt2" and getattr(m, "is_residual_projection", False):
                    nn.init.normal_(m.weight, mean=0.0, std=std / math.sqrt(2 * n_layer))
                else:
                    _init_linear_like(m.weight, scheme, std)
            if once(m.bias):
                nn.init.zeros_(m.bias)
        elif isinstance(m, NORM_TYPES):
            if once(getattr(m, "weight", None)):
                nn.init.ones_(m.weight)
            if once(getattr(m, "bias", None)):
                nn.init.zeros_(m.bias)
    return module
