from __future__ import annotations

import copy
import math
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from storyopt_lib.diagnostics import (
    deep_mlp_stats,
    loss_on_line,
    permute_hidden_units_,
    random_direction,
    residual_stream_std,
    state_difference,
)
from storyopt_lib.initializers import he_normal, normal, orthogonal, xavier_normal
from storyopt_lib.model import ModelConfig, StorytellerModel


def tiny_model(n_layer: int = 2) -> StorytellerModel:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=20, block_size=8, d_model=16, n_head=2, n_layer=n_layer)
    return StorytellerModel(cfg)


def batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randint(0, 20, (3, 8), generator=g), torch.randint(0, 20, (3, 8), generator=g))
        for _ in range(n)
    ]


def test_random_direction_filter_normalised() -> None:
    model = tiny_model()
    d = random_direction(model, seed=0)
    params = dict(model.named_parameters())
    assert d.keys() == params.keys()
    for name, p in params.items():
        if p.ndim < 2:
            assert torch.count_nonzero(d[name]) == 0
        else:
            rows_p = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            rows_d = d[name].reshape(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(rows_d, rows_p)
    # deterministic in the seed, different across seeds
    d2 = random_direction(model, seed=0)
    d3 = random_direction(model, seed=1)
    assert all(torch.equal(d[k], d2[k]) for k in d)
    assert not torch.equal(d["tok_emb.weight"], d3["tok_emb.weight"])


def test_random_direction_none_and_invalid() -> None:
    d = random_direction(nn.Linear(3, 2), normalize="none")
    assert torch.count_nonzero(d["bias"]) == 2
    with pytest.raises(ValueError, match="normalize"):
        random_direction(nn.Linear(3, 2), normalize="layer")


def test_loss_on_line_origin_and_restores_parameters() -> None:
    model = tiny_model()
    data = batches()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = loss_on_line(model, data, random_direction(model), [0.0, 1.0])
    with torch.no_grad():
        ref = sum(float(model(x, y)[1]) for x, y in data) / len(data)  # equal token counts
    assert losses[0] == pytest.approx(ref, rel=1e-6)
    assert losses[1] != pytest.approx(losses[0])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert model.training  # mode restored


def test_loss_on_line_endpoint_is_other_model() -> None:
    a, b = tiny_model(), tiny_model()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.1)
    data = batches()
    end = loss_on_line(a, data, state_difference(a, b), [1.0])[0]
    with torch.no_grad():
        b.eval()
        ref = sum(float(b(x, y)[1]) for x, y in data) / len(data)
    assert end == pytest.approx(ref, rel=1e-5)


def test_loss_on_line_rejects_bad_input() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="empty"):
        loss_on_line(model, [], random_direction(model), [0.0])
    with pytest.raises(ValueError, match="lacks"):
        loss_on_line(model, batches(), {"nope": torch.zeros(1)}, [0.0])


def test_permute_hidden_units_keeps_function_changes_point() -> None:
    model = tiny_model()
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    for block in other.blocks:
        perm = torch.randperm(block.mlp.fc.out_features, generator=gen)
        permute_hidden_units_(block.mlp.fc, block.mlp.proj, perm)
    x, _ = batches(1)[0]
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], other(x)[0], rtol=1e-5, atol=1e-6)
    assert not torch.equal(model.blocks[0].mlp.fc.weight, other.blocks[0].mlp.fc.weight)
    with pytest.raises(ValueError, match="permutation"):
        permute_hidden_units_(
            other.blocks[0].mlp.fc, other.blocks[0].mlp.proj, torch.zeros(64).long()
        )


def test_deep_mlp_stats_shapes_and_known_behaviour() -> None:
    s = deep_mlp_stats(xavier_normal, depth=5, width=16, batch=8)
    assert {k: v.shape for k, v in s.items()} == {
        k: (5,) for k in ("act_std", "grad_std", "act_grad_std")
    }
    # linear network with orthogonal weights keeps the scale exactly; std 0.01 makes it vanish
    orth = deep_mlp_stats(orthogonal, depth=20, width=64, activation="linear", batch=256)
    assert orth["act_std"][-1] == pytest.approx(orth["act_std"][0], rel=0.1)
    small = deep_mlp_stats(partial(normal, std=0.01), depth=20, width=64, activation="tanh")
    assert small["act_std"][-1] < 1e-10
    # He keeps ReLU activations at order one
    he = deep_mlp_stats(he_normal, depth=20, width=128, activation="relu")
    assert 0.3 < he["act_std"][-1] < 3.0
    # vanishing gradient for g < 1 in a linear network: about g^depth
    g = 0.5
    lin = deep_mlp_stats(
        partial(normal, std=g / math.sqrt(64)), depth=10, width=64, activation="linear"
    )
    ratio = lin["act_grad_std"][0] / lin["act_grad_std"][-1]
    assert 0.1 * g**9 < ratio < 10 * g**9


def test_deep_mlp_stats_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="activation"):
        deep_mlp_stats(xavier_normal, activation="gelu")
    with pytest.raises(ValueError, match="depth"):
        deep_mlp_stats(xavier_normal, depth=0)


def test_deep_mlp_stats_is_deterministic() -> None:
    a = deep_mlp_stats(he_normal, depth=4, width=16, batch=8, seed=3)
    b = deep_mlp_stats(he_normal, depth=4, width=16, batch=8, seed=3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_residual_stream_std() -> None:
    model = tiny_model(n_layer=3)
    x, _ = batches(1)[0]
    s = residual_stream_std(model, x)
    assert s.shape == (4,)
    assert np.all(s > 0)
    assert model.training
    with torch.no_grad():
        emb = model.tok_emb(x) + model.pos_emb(torch.arange(x.shape[1]))
    assert s[0] == pytest.approx(float(emb.std()), rel=1e-6)
    assert not model.blocks[0]._forward_hooks  # hooks removed
    with pytest.raises(ValueError, match="blocks"):
        residual_stream_std(nn.Linear(2, 2), x)
