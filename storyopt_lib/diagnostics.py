"""Measurements for sections 7.1-7.2: loss along lines in parameter space, and signal statistics.

- Loss landscape (Li et al. 2018; Goodfellow et al. 2015): ``random_direction`` draws a
  filter-normalised direction d, ``loss_on_line`` evaluates L(θ₀ + α·d) for a list of α, and
  ``state_difference`` gives d = θ_b − θ_a for the straight path between two solutions.
  ``permute_hidden_units_`` reorders the hidden units of a two-layer MLP, which leaves the function
  (and so the loss) unchanged: two different points with the same loss.
- Signal propagation: ``deep_mlp_stats`` pushes a batch through a deep plain MLP whose weights
  come from one of ``storyopt_lib.initializers`` and returns the standard deviation of the
  activations and gradients per layer; ``residual_stream_std`` records the scale of a
  transformer's residual stream after each block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "deep_mlp_stats",
    "loss_on_line",
    "permute_hidden_units_",
    "random_direction",
    "residual_stream_std",
    "state_difference",
]

Direction = dict[str, torch.Tensor]


def random_direction(model: nn.Module, seed: int = 0, normalize: str = "filter") -> Direction:
    """A random direction d in parameter space, one tensor per named parameter.

    With ``normalize="filter"`` (Li et al. 2018) each row ("filter") d_i of a weight with >= 2
    dimensions is rescaled to the norm of the same row of the weight, ‖d_i‖ = ‖θ_i‖, and
    1-D parameters (biases, norm scales) get d = 0, so a step α moves every layer by the same
    relative amount. ``normalize="none"`` keeps the raw N(0, 1) draw for every parameter.

    Args:
        model: the network; its current parameters define the per-row norms.
        seed: seed of the ``torch.Generator`` that draws d.
        normalize: "filter" or "none".

    Example:
        >>> d = random_direction(nn.Linear(3, 2), seed=0)
        >>> sorted(d)
        ['bias', 'weight']
    """
    if normalize not in ("filter", "none"):
        raise ValueError(f"Invalid normalize: normalize={normalize!r} (must be 'filter' or 'none')")
    gen = torch.Generator().manual_seed(seed)
    out: Direction = {}
    for name, p in model.named_parameters():
        d = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
        if normalize == "filter":
            if p.ndim < 2:
                d = torch.zeros_like(p)
            else:
                rows_p = p.detach().reshape(p.shape[0], -1).norm(dim=1, keepdim=True)
                rows_d = d.reshape(p.shape[0], -1).norm(dim=1, keepdim=True)
                d = (d.reshape(p.shape[0], -1) * rows_p / rows_d.clamp_min(1e-12)).reshape(p.shape)
        out[name] = d.to(p.device)
    return out


def state_difference(a: nn.Module, b: nn.Module) -> Direction:
    """d = θ_b − θ_a per named parameter (the two models must have the same parameter names)."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    if pa.keys() != pb.keys():
        raise ValueError("Models differ in their parameter names; cannot subtract them")
    return {k: (pb[k].detach() - pa[k].detach()).clone() for k in pa}


@torch.no_grad()
def loss_on_line(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    direction: Direction,
    alphas: Iterable[float],
) -> np.ndarray:
    """L(θ₀ + α·d) for each α, θ₀ the model's current parameters; the model is left at θ₀.

    L is the token-weighted mean of ``model(x, y)[1]`` over ``batches`` (a fixed list, so every
    α sees the same data), computed in eval mode.

    Args:
        model: called as ``model(x, y) -> (logits, loss)``.
        batches: a list of ``(x, y)`` batches.
        direction: from ``random_direction`` or ``state_difference`` (names of the model's
            parameters; missing names do not move).
        alphas: step sizes along d.

    Example:
        >>> loss_on_line(model, batches, random_direction(model), [0.0, 0.5])  # doctest: +SKIP
        array([2.71, 3.02])
    """
    if not batches:
        raise ValueError("batches is empty: pass at least one (x, y) batch")
    params = dict(model.named_parameters())
    unknown = set(direction) - set(params)
    if unknown:
        raise ValueError(f"direction names parameters the model lacks: {sorted(unknown)[:3]}")
    origin = {k: params[k].detach().clone() for k in direction}
    was_training = model.training
    model.eval()
    losses = []
    try:
        for alpha in alphas:
            for k, d in direction.items():
                params[k].copy_(origin[k] + float(alpha) * d)
            total, count = 0.0, 0
            for x, y in batches:
                _, loss = model(x, y)
                n = int((y != -100).sum())
                total += float(loss) * n
                count += n
            losses.append(total / count)
    finally:
        for k in direction:
            params[k].copy_(origin[k])
        model.train(was_training)
    return np.array(losses)


@torch.no_grad()
def permute_hidden_units_(fc: nn.Linear, proj: nn.Linear, perm: torch.Tensor) -> None:
    """Reorder the hidden units of ``proj(act(fc(x)))`` in place by ``perm``; the map is unchanged.

    Hidden unit j is row j of ``fc.weight`` (and ``fc.bias[j]``) and column j of ``proj.weight``;
    an elementwise activation commutes with the permutation, so the output is the same function
    of x while the parameter vector θ is a different point.
    """
    hidden = fc.out_features
    if proj.in_features != hidden:
        raise ValueError(f"fc.out_features={hidden} != proj.in_features={proj.in_features}")
    if sorted(perm.tolist()) != list(range(hidden)):
        raise ValueError(f"perm is not a permutation of range({hidden})")
    fc.weight.copy_(fc.weight[perm])
    if fc.bias is not None:
        fc.bias.copy_(fc.bias[perm])
    proj.weight.copy_(proj.weight[:, perm])


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "linear": lambda h: h,
}


def deep_mlp_stats(
    init: Callable[..., np.ndarray],
    *,
    depth: int = 24,
    width: int = 256,
    activation: str = "tanh",
    batch: int = 512,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-layer statistics of a deep plain MLP h_l = φ(h_{l-1} W_l), at initialisation.

    W_l has the NumPy shape (fan_in, fan_out) = (width, width) and is drawn by
    ``init(shape, rng=rng)`` (any initializer of ``storyopt_lib.initializers``); the input is
    x ~ N(0, 1) and the loss L = Σ h_depth · r / batch with a fixed r ~ N(0, 1), so the gradient
    that enters the top layer has unit scale and what reaches layer l shows how the network
    carries it back.

    Returns:
        Arrays of length ``depth``, index l-1 for layer l = 1..depth:
        ``"act_std"``: std(h_l), the layer's output; ``"grad_std"``: std(∂L/∂W_l), what the
        optimizer sees; ``"act_grad_std"``: std(∂L/∂h_{l-1}), the gradient arriving at the
        layer's input (index 0: at the network's input x), which shows vanishing or exploding
        gradients most directly (in a linear network std(∂L/∂W_l) is the same for every l).

    Example:
        >>> from storyopt_lib.initializers import xavier_normal
        >>> deep_mlp_stats(xavier_normal, depth=3, width=8, batch=4)["act_std"].shape
        (3,)
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"Invalid activation: activation={activation!r} (valid: tanh, relu, linear)"
        )
    for name, v in (("depth", depth), ("width", width), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"Invalid {name}: {name}={v!r} (must be an integer >= 1)")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    phi = _ACTIVATIONS[activation]
    weights = [
        torch.tensor(init((width, width), rng=rng), dtype=torch.float32).requires_grad_()
        for _ in range(depth)
    ]
    h = torch.randn(batch, width, generator=gen).requires_grad_()
    inputs, acts = [], []
    for w in weights:
        if not h.is_leaf:
            h.retain_grad()
        inputs.append(h)
        h = phi(h @ w)  # (batch, fan_in) @ (fan_in, fan_out)
        acts.append(h.detach())
    r = torch.randn(batch, width, generator=gen)
    (h * r).sum().div(batch).backward()
    return {
        "act_std": np.array([float(a.std()) for a in acts]),
        "grad_std": np.array([float(w.grad.std()) for w in weights]),
        "act_grad_std": np.array([float(x.grad.std()) for x in inputs]),
    }


@torch.no_grad()
def residual_stream_std(
    model: nn.Module, idx: torch.Tensor, blocks: Sequence[nn.Module] | None = None
) -> np.ndarray:
    """Standard deviation of the residual stream x_l entering block 0 and leaving each block.

    Forward hooks record the input of the first block (token + position embeddings) and the
    output of every block, so the result has ``len(blocks) + 1`` entries.

    Args:
        model: a transformer called as ``model(idx)``.
        idx: token ids (B, T).
        blocks: the residual blocks in order (default ``model.blocks``).
    """
    if blocks is None:
        blocks = getattr(model, "blocks", None)
        if blocks is None:
            raise ValueError("model has no attribute 'blocks'; pass blocks= explicitly")
    blocks = list(blocks)
    if not blocks:
        raise ValueError("blocks is empty")
    out: list[float] = []

    def pre(_m: nn.Module, args: tuple) -> None:
        out.append(float(args[0].std()))

    def post(_m: nn.Module, _args: tuple, y: torch.Tensor) -> None:
        out.append(float((y[0] if isinstance(y, tuple) else y).std()))

    handles = [blocks[0].register_forward_pre_hook(pre)]
    handles += [b.register_forward_hook(post) for b in blocks]
    was_training = model.training
    model.eval()
    try:
        model(idx)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return np.array(out)
