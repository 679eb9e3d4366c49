"""NumPy initializers (statistics, fans, orthogonality, seeds) and init_weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from storyopt_lib import initializers as I

SHAPES = [(256, 128), (64, 512), (300, 300), (16, 8, 3, 3)]


def theoretical_std(name, shape):
    fan_in, fan_out = I.get_fans(shape)
    return {
        "xavier_uniform": math.sqrt(2 / (fan_in + fan_out)),
        "xavier_normal": math.sqrt(2 / (fan_in + fan_out)),
        "he_uniform": math.sqrt(2 / fan_in),
        "he_normal": math.sqrt(2 / fan_in),
        "uniform": 0.2 / math.sqrt(12),
        "normal": 0.01,
    }[name]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "name", ["xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "uniform", "normal"]
)
def test_sample_std_within_standard_errors(name, shape):
    w = getattr(I, name)(shape, rng=np.random.default_rng(0))
    assert w.shape == shape
    sigma = theoretical_std(name, shape)
    # Standard error of a sample std is about sigma / sqrt(2n) (a bit different for uniform).
    se = sigma / math.sqrt(2 * w.size)
    assert abs(w.std() - sigma) < 5 * se
    assert abs(w.mean()) < 5 * sigma / math.sqrt(w.size)


@pytest.mark.parametrize(("fan_in", "fan_out"), [(256, 128), (64, 512)])
def test_variances_equal_torch_nn_init(fan_in, fan_out):
    # NumPy shape (fan_in, fan_out) <-> torch weight (fan_out, fan_in): the same fans.
    n = 200_000 // (fan_in * fan_out) + 1
    torch.manual_seed(0)
    pairs = [
        (I.xavier_uniform, nn.init.xavier_uniform_, {}),
        (I.xavier_normal, nn.init.xavier_normal_, {}),
        (I.he_uniform, nn.init.kaiming_uniform_, {"nonlinearity": "relu"}),
        (I.he_normal, nn.init.kaiming_normal_, {"nonlinearity": "relu"}),
    ]
    for ours, theirs, kw in pairs:
        ws = np.concatenate(
            [ours((fan_in, fan_out), rng=np.random.default_rng(i)).ravel() for i in range(n)]
        )
        ts = torch.cat([theirs(torch.empty(fan_out, fan_in), **kw).ravel() for _ in range(n)])
        assert ws.var() == pytest.approx(ts.var().item(), rel=0.02)
        expected = theoretical_std(ours.__name__, (fan_in, fan_out)) ** 2
        assert ws.var() == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("shape", [(64, 64), (128, 32), (32, 128), (8, 4, 3, 3)])
def test_orthogonal(shape):
    w = I.orthogonal(shape, gain=1.0, rng=np.random.default_rng(0))
    assert w.shape == shape
    q = w.reshape(shape[0], -1)
    if q.shape[0] >= q.shape[1]:
        np.testing.assert_allclose(q.T @ q, np.eye(q.shape[1]), atol=1e-6)
    else:
        np.testing.assert_allclose(q @ q.T, np.eye(q.shape[0]), atol=1e-6)
    w2 = I.orthogonal(shape, gain=2.0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(w2, 2 * w)


def test_same_seed_same_array():
    for fn in (I.uniform, I.normal, I.xavier_uniform, I.xavier_normal, I.he_uniform, I.he_normal):
        a = fn((20, 30), rng=np.random.default_rng(7))
        b = fn((20, 30), rng=np.random.default_rng(7))
        c = fn((20, 30), rng=np.random.default_rng(8))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    np.testing.assert_array_equal(
        I.orthogonal((5, 5), rng=np.random.default_rng(1)),
        I.orthogonal((5, 5), rng=np.random.default_rng(1)),
    )
    assert I.zeros((2, 3)).sum() == 0 and (I.constant((2, 3), 0.1) == 0.1).all()


def test_get_fans():
    assert I.get_fans((256, 64)) == (256, 64)
    assert I.get_fans((16, 8, 3, 3)) == (72, 144)  # (out, in, kh, kw): in*9, out*9


def activation_scale(init, depth=50, width=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(512, width))
    scale_in = x.std()
    for _ in range(depth):
        x = np.maximum(x @ init((width, width), rng=rng), 0.0)
    return np.sqrt(np.mean(x**2)) / scale_in


def test_deep_relu_mlp_he_keeps_scale_xavier_shrinks():
    he = activation_scale(I.he_normal)
    xavier = activation_scale(I.xavier_normal)
    assert 0.5 < he < 2.0  # He: E[x²] preserved through ReLU layers
    assert xavier < 0.1  # Xavier: halves E[x²] per ReLU layer, 2^-25 after 50 layers


def make_blocks(n_layer=4, d=32):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.proj.is_residual_projection = True
            self.fc = nn.Linear(d, 4 * d)
            self.fc_out = nn.Linear(4 * d, d)
            self.fc_out.is_residual_projection = True

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(100, d)
            self.blocks = nn.ModuleList(Block() for _ in range(n_layer))
            self.ln_f = nn.LayerNorm(d)
            self.lm_head = nn.Linear(d, 100, bias=False)
            self.lm_head.weight = self.wte.weight

    return Model()


def test_init_weights_gpt2_residual_projections():
    torch.manual_seed(0)
    n_layer = 4
    model = make_blocks(n_layer, d=128)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    I.init_weights(model, "gpt2", n_layer=n_layer)
    resid = torch.cat(
        [torch.cat([b.proj.weight.ravel(), b.fc_out.weight.ravel()]) for b in model.blocks]
    )
    other = torch.cat(
        [torch.cat([b.qkv.weight.ravel(), b.fc.weight.ravel()]) for b in model.blocks]
    )
    assert resid.std().item() == pytest.approx(0.02 / math.sqrt(2 * n_layer), rel=0.03)
    assert other.std().item() == pytest.approx(0.02, rel=0.03)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)  # tied head: once
    assert model.lm_head.weight is model.wte.weight
    for b in model.blocks:
        assert (b.qkv.bias == 0).all() and (b.ln_1.weight == 1).all() and (b.ln_1.bias == 0).all()
    assert (model.ln_f.weight == 1).all()


@pytest.mark.parametrize("scheme", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_weights_other_schemes(scheme):
    torch.manual_seed(0)
    model = make_blocks(2, d=64)
    I.init_weights(model, scheme)
    w = model.blocks[0].fc.weight  # (256, 64): fan_in 64, fan_out 256
    expected = {
        "normal": 0.02,
        "xavier": math.sqrt(2 / (64 + 256)),
        "kaiming": math.sqrt(2 / 64),
        "orthogonal": math.sqrt(1 / 256),  # orthonormal columns of length 256
    }[scheme]
    assert w.std().item() == pytest.approx(expected, rel=0.05)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_bad_input():
    with pytest.raises(ValueError, match=r"shape=\(10,\)"):
        I.get_fans((10,))
    with pytest.raises(ValueError, match=r"shape=\(\)"):
        I.xavier_uniform(())
    with pytest.raises(ValueError, match="'lecun'") as info:
        I.init_weights(nn.Linear(2, 2), "lecun")
    assert "gpt2" in str(info.value)
    model = make_blocks(1)
    before = model.blocks[0].proj.weight.clone()
    with pytest.raises(ValueError, match="n_layer=None"):
        I.init_weights(model, "gpt2")
    assert torch.equal(model.blocks[0].proj.weight, before)  # nothing changed
    with pytest.raises(ValueError, match="n_layer=0"):
        I.init_weights(model, "gpt2", n_layer=0)
    with pytest.raises(TypeError, match="rng="):
        I.normal((2, 2), rng=0)
    with pytest.raises(TypeError, match="module="):
        I.init_weights("model", "normal")
