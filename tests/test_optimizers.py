"""From-scratch optimizers vs torch.optim, parameter groups, create_optimizer, state_bytes."""

from __future__ import annotations

import copy
import io
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from storyopt_lib import optimizers as O

STEPS = 100
TOL = 1e-6

# (id, from-scratch name, torch class, hyperparameters); {} = PyTorch's defaults.
CONFIGS = [
    ("sgd-default", "sgd", torch.optim.SGD, {}),
    ("sgd-wd", "sgd", torch.optim.SGD, {"lr": 5e-4, "weight_decay": 0.1}),
    ("sgd-momentum", "sgd", torch.optim.SGD, {"lr": 5e-4, "momentum": 0.9}),
    (
        "sgd-nesterov-wd",
        "sgd",
        torch.optim.SGD,
        {"lr": 5e-4, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05},
    ),
    ("adagrad-default", "adagrad", torch.optim.Adagrad, {}),
    (
        "adagrad-custom",
        "adagrad",
        torch.optim.Adagrad,
        {
            "lr": 0.05,
            "eps": 1e-6,
            "weight_decay": 0.1,
            "lr_decay": 0.01,
            "initial_accumulator_value": 0.1,
        },
    ),
    ("rmsprop-default", "rmsprop", torch.optim.RMSprop, {}),
    (
        "rmsprop-custom",
        "rmsprop",
        torch.optim.RMSprop,
        {"lr": 3e-3, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.1},
    ),
    ("adam-default", "adam", torch.optim.Adam, {}),
    (
        "adam-custom",
        "adam",
        torch.optim.Adam,
        {"lr": 2e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
    ),
    ("adamw-default", "adamw", torch.optim.AdamW, {}),
    (
        "adamw-custom",
        "adamw",
        torch.optim.AdamW,
        {"lr": 2e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.5},
    ),
    ("adamw-no-decay", "adamw", torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.0}),
]
CONFIG_IDS = [c[0] for c in CONFIGS]


def rel_dev(a: np.ndarray, b: np.ndarray) -> float:
    """max_i |a_i − b_i| / max(|b_i|, 1e-8): relative deviation, guarded near zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-8)))


def ill_conditioned_quadratic(seed: int, dim: int = 8, condition: float = 300.0):
    """f(x) = ½ xᵀAx − bᵀx with eigenvalues of A log-spaced in [1, condition]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    a = q @ np.diag(np.logspace(0, np.log10(condition), dim)) @ q.T
    b = rng.normal(size=dim)
    x0 = rng.normal(size=dim) * 2
    return a, b, x0


def compare(name, torch_cls, hp, grad_np, grad_torch, x0) -> float:
    x = np.array(x0, dtype=np.float64)
    t = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    ours = O.get_algorithm(name)([x], **hp)
    ref = torch_cls([t], **hp)
    worst = 0.0
    for _ in range(STEPS):
        ours.step([grad_np(x)])
        t.grad = grad_torch(t.detach())
        ref.step()
        assert np.all(np.isfinite(x))
        worst = max(worst, rel_dev(x, t.detach().numpy()))
        assert worst <= TOL
    return worst


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("cid", "name", "torch_cls", "hp"), CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_on_quadratic(cid, name, torch_cls, hp, seed):
    a, b, x0 = ill_conditioned_quadratic(seed)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    worst = compare(name, torch_cls, hp, lambda x: a @ x - b, lambda t: at @ t - bt, x0)
    assert worst <= TOL


def rosen_grad_np(xy):
    x, y = xy
    return np.array([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])


def rosen_grad_torch(t):
    x, y = t[0], t[1]
    return torch.stack([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])


@pytest.mark.parametrize(("cid", "name", "torch_cls", "hp"), CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_on_rosenbrock(cid, name, torch_cls, hp):
    hp = dict(hp)
    if name == "sgd":  # curvature ~1e3 at the start: keep plain SGD stable
        hp["lr"] = min(hp.get("lr", 1e-3), 5e-4)
    worst = compare(name, torch_cls, hp, rosen_grad_np, rosen_grad_torch, [-1.2, 1.0])
    assert worst <= TOL


def test_list_optimizer_accepts_tensors():
    a, b, x0 = ill_conditioned_quadratic(3)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    x = torch.tensor(x0)
    t = torch.tensor(x0, requires_grad=True)
    ours, ref = O.Adam([x], lr=1e-2), torch.optim.Adam([t], lr=1e-2)
    for _ in range(STEPS):
        ours.step([at @ x - bt])
        t.grad = at @ t.detach() - bt
        ref.step()
    assert rel_dev(x.numpy(), t.detach().numpy()) <= TOL


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 3)).double()


@pytest.mark.parametrize(("cid", "name", "torch_cls", "hp"), CONFIGS, ids=CONFIG_IDS)
def test_scratch_optimizer_matches_torch_on_model(cid, name, torch_cls, hp):
    hp = {k: v for k, v in hp.items() if k != "weight_decay"}
    # lr <= 1e-2: at 2e-2 Adam on this model amplifies last-bit rounding (even the thread count
    # changes the torch reference by ~1e-6), which would test chaos, not the update rule.
    hp["lr"] = min(hp.get("lr", 1e-2), 1e-2)
    wd = 0.1 if name != "sgd" or "momentum" in hp else 0.0
    model_a = small_model()
    model_b = copy.deepcopy(model_a)
    ours = O.ScratchOptimizer(O.param_groups(model_a, wd), name, **hp)
    ref = torch_cls(O.param_groups(model_b, wd), **hp)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen)
    for _ in range(STEPS):
        for model, opt in ((model_a, ours), (model_b, ref)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
            assert rel_dev(pa.detach().numpy(), pb.detach().numpy()) <= TOL


def test_scratch_optimizer_with_lr_scheduler_and_state_dict():
    model_a = small_model()
    model_b = copy.deepcopy(model_a)
    ours = O.ScratchOptimizer(model_a.parameters(), "adamw", lr=1e-2)
    ref = torch.optim.AdamW(model_b.parameters(), lr=1e-2)
    scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5) for o in (ours, ref)]
    x = torch.randn(32, 5, dtype=torch.float64)
    for _ in range(40):
        for model, opt in ((model_a, ours), (model_b, ref)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        for s in scheds:
            s.step()
    assert ours.param_groups[0]["lr"] == ref.param_groups[0]["lr"] == 1e-2 * 0.5**4
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert rel_dev(pa.detach().numpy(), pb.detach().numpy()) <= TOL
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    restored = O.ScratchOptimizer(model_a.parameters(), "adamw", lr=1e-2)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    first = next(iter(restored.state.values()))
    assert first["step"] == 40
    assert torch.equal(first["exp_avg"], next(iter(ours.state.values()))["exp_avg"])


@pytest.mark.parametrize("nesterov", [False, True])
def test_lr_changes_between_steps_match_torch(nesterov):
    a, b, x0 = ill_conditioned_quadratic(4)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    for name, torch_cls, hp in [
        ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": nesterov}),
        ("adam", torch.optim.Adam, {}),
    ]:
        x, t = np.array(x0), torch.tensor(x0, requires_grad=True)
        ours, ref = O.get_algorithm(name)([x], lr=1e-3, **hp), torch_cls([t], lr=1e-3, **hp)
        for k in range(STEPS):
            lr = 1e-3 * (0.5 if k >= 50 else 1.0) * (k + 1) / STEPS
            ours.lr = lr
            ref.param_groups[0]["lr"] = lr
            ours.step([a @ x - b])
            t.grad = at @ t.detach() - bt
            ref.step()
            assert rel_dev(x, t.detach().numpy()) <= TOL


def test_seed_momentum_form_equals_torch_until_lr_changes():
    a, b, x0 = ill_conditioned_quadratic(5)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    x, v = np.array(x0), np.zeros_like(x0)
    t = torch.tensor(x0, requires_grad=True)
    ref = torch.optim.SGD([t], lr=1e-3, momentum=0.9)
    devs = []
    for k in range(STEPS):
        lr = 1e-3 if k < 50 else 1e-4  # the LR drops 10x at step 50
        O.sgd_momentum_seed_form(x, a @ x - b, v, lr=lr, momentum=0.9)
        ref.param_groups[0]["lr"] = lr
        t.grad = at @ t.detach() - bt
        ref.step()
        devs.append(rel_dev(x, t.detach().numpy()))
    assert max(devs[:50]) <= TOL  # constant lr: v = lr * b, identical iterates
    assert max(devs[50:]) > 1e-3  # after the change the seed's v keeps the old lr's steps


def test_nesterov_lookahead_points_follow_torch():
    a, b, x0 = ill_conditioned_quadratic(6)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    lr, mu = 1e-3, 0.9
    theta, v = np.array(x0), np.zeros_like(x0)
    t = torch.tensor(x0, requires_grad=True)
    ref = torch.optim.SGD([t], lr=lr, momentum=mu, nesterov=True)
    for _ in range(STEPS):
        O.nesterov_lookahead_step(theta, lambda p: a @ p - b, v, lr=lr, momentum=mu)
        t.grad = at @ t.detach() - bt
        ref.step()
        phi = theta - mu * v  # the look-ahead point
        assert rel_dev(phi, t.detach().numpy()) <= TOL
    assert rel_dev(theta, t.detach().numpy()) > 1e-6  # θ itself is a different sequence


class NamedNormsModel(nn.Module):
    """Norms named ln_1, ln_f, norm: none contains 'layernorm' or 'layer_norm'."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(10, 8)
        self.ln_1 = nn.LayerNorm(8)
        self.attn = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8, bias=False)
        self.mlp = nn.Linear(8, 8)
        self.ln_f = nn.LayerNorm(8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.wte.weight  # tied
        self.scale = nn.Parameter(torch.ones(8))  # a 1-D gain outside any norm module


def test_param_groups_structural_rule():
    model = NamedNormsModel()
    decay, no_decay = O.param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    norm_and_bias = {
        id(p)
        for m in model.modules()
        for n, p in m.named_parameters(recurse=False)
        if isinstance(m, nn.LayerNorm) or n == "bias"
    }
    assert norm_and_bias and not norm_and_bias & {id(p) for p in decay["params"]}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert {id(p) for p in decay["params"]} == {
        id(model.wte.weight),
        id(model.attn.weight),
        id(model.mlp.weight),
    }
    n_unique = len({id(p) for p in model.parameters()})
    assert len(decay["params"]) + len(no_decay["params"]) == n_unique  # tied weight once

    table = O.describe_param_groups(model)
    assert ("ln_1.weight", (8,), False) in table and ("wte.weight", (10, 8), True) in table
    # The seed's substring rule decays every norm weight here (and the 1-D 'scale').
    wrongly_decayed = [n for n, _, decays in table if not decays and not O.name_rule_no_decay(n)]
    assert {"ln_1.weight", "norm.weight", "ln_f.weight", "scale"} <= set(wrongly_decayed)


def test_create_optimizer_names_and_groups():
    model = NamedNormsModel()
    expected = {
        "sgd": torch.optim.SGD,
        "adagrad": torch.optim.Adagrad,
        "rmsprop": torch.optim.RMSprop,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "adafactor": torch.optim.Adafactor,
    }
    for name, cls in expected.items():
        opt = O.create_optimizer(model, name, lr=1e-3, weight_decay=0.1)
        assert type(opt) is cls
        assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    opt = O.create_optimizer(model, "sgd", lr=0.1, weight_decay=0.0, momentum=0.9)
    assert opt.param_groups[0]["momentum"] == 0.9


def test_state_bytes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    x = torch.randn(8, 64)

    def after_step(opt):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        return O.state_bytes(opt)

    assert after_step(torch.optim.SGD(model.parameters(), lr=0.1)) == 0
    assert after_step(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)) == param_bytes
    assert after_step(torch.optim.Adam(model.parameters())) == 2 * param_bytes
    assert after_step(torch.optim.AdamW(model.parameters())) == 2 * param_bytes
    assert after_step(O.ScratchOptimizer(model.parameters(), "adamw")) == 2 * param_bytes
    assert after_step(O.ScratchOptimizer(model.parameters(), "sgd", momentum=0.9)) == param_bytes
    # Adafactor factors the second moment of a matrix into a row and a column vector.
    matrices = [p for p in model.parameters() if p.ndim == 2]
    adam_bytes = after_step(torch.optim.Adam(matrices))
    adafactor_bytes = after_step(torch.optim.Adafactor(matrices))
    assert 0 < adafactor_bytes < adam_bytes / 10
    xs = [np.zeros((3, 4))]
    opt = O.Adam(xs)
    assert O.state_bytes(opt) == 0
    opt.step([np.ones((3, 4))])
    assert O.state_bytes(opt) == 2 * xs[0].nbytes


@pytest.mark.parametrize("cid, name, torch_cls, hp", CONFIGS, ids=CONFIG_IDS)
def test_step_allocates_no_parameter_sized_temporaries(cid, name, torch_cls, hp):
    # Issue 3: parameter-sized temporaries made a step 3-6x slower than torch.optim (page faults
    # with glibc's malloc). After the first step (state, workspace), a step allocates nothing big.
    rng = np.random.default_rng(0)
    x, g = rng.normal(size=100_000), rng.normal(size=100_000)
    opt = O.get_algorithm(name)([x], **hp)
    opt.step([g])
    keys = set(opt.state[0])
    tracemalloc.start()
    try:
        for _ in range(3):
            opt.step([g])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes / 10
    assert set(opt.state[0]) == keys
    assert np.all(np.isfinite(x))


def test_scratch_optimizer_workspace_is_not_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 40), nn.Linear(40, 50))
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    opt = O.ScratchOptimizer(model.parameters(), "adam", weight_decay=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 50)).square().mean().backward()
        opt.step()
    assert all(set(s) == {"step", "exp_avg", "exp_avg_sq"} for s in opt.state.values())
    assert O.state_bytes(opt) == 2 * param_bytes
    # One buffer shared by all parameters: two arrays the size of the largest one (50 x 40).
    assert [w.numel() for w in opt.workspaces.values()] == [2 * 2000]
    clone = copy.deepcopy(opt)  # torch's __getstate__ alone would drop the rule
    clone.step()
    assert clone.algorithm is O.Adam


BAD_HPARAMS = [
    ("sgd", {"lr": -1.0}, ValueError, "lr=-1.0"),
    ("sgd", {"lr": float("nan")}, ValueError, "lr=nan"),
    ("adam", {"lr": "0.1"}, TypeError, "lr='0.1'"),
    ("adam", {"betas": (1.0, 0.999)}, ValueError, "betas[0]=1.0"),
    ("adamw", {"betas": (0.9, -0.1)}, ValueError, "betas[1]=-0.1"),
    ("adam", {"eps": 0.0}, ValueError, "eps=0.0"),
    ("rmsprop", {"eps": -1e-8}, ValueError, "eps=-1e-08"),
    ("adagrad", {"weight_decay": -0.1}, ValueError, "weight_decay=-0.1"),
    ("sgd", {"momentum": -0.5}, ValueError, "momentum=-0.5"),
    ("sgd", {"nesterov": True}, ValueError, "nesterov=True"),
    ("rmsprop", {"alpha": 1.5}, ValueError, "alpha=1.5"),
    ("adam", {"momentum": 0.9}, TypeError, "momentum"),
]


@pytest.mark.parametrize(("name", "hp", "exc", "match"), BAD_HPARAMS)
def test_bad_hyperparameters(name, hp, exc, match):
    x = np.ones(3)
    with pytest.raises(exc) as info:
        O.get_algorithm(name)([x], **hp)
    assert match in str(info.value)
    with pytest.raises(exc) as info:
        O.ScratchOptimizer([torch.ones(3, requires_grad=True)], name, **hp)
    assert match in str(info.value)
    np.testing.assert_array_equal(x, np.ones(3))


def test_bad_step_inputs_leave_state_unchanged():
    params = [np.ones((2, 3)), np.ones(4)]
    opt = O.Adam(params, lr=0.1)
    opt.step([np.ones((2, 3)), np.ones(4)])
    before = copy.deepcopy((params, opt.state))

    def unchanged():
        after = (params, opt.state)
        for p, q in zip(before[0], after[0], strict=True):
            np.testing.assert_array_equal(p, q)
        for s, r in zip(before[1], after[1], strict=True):
            assert s["step"] == r["step"]
            np.testing.assert_array_equal(s["exp_avg"], r["exp_avg"])

    with pytest.raises(ValueError, match=r"len\(grads\)=1"):
        opt.step([np.ones((2, 3))])
    unchanged()
    with pytest.raises(ValueError, match=r"grads\[1\].*shape \(5,\)"):
        opt.step([np.ones((2, 3)), np.ones(5)])
    unchanged()
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        opt.step([np.ones((2, 3), dtype=np.int64), np.ones(4)])
    unchanged()
    with pytest.raises(ValueError, match=r"lr=-0\.5"):
        opt.lr = -0.5
    assert opt.lr == 0.1


def test_bad_names_list_valid_ones():
    with pytest.raises(ValueError, match="adafactor") as info:
        O.create_optimizer(nn.Linear(2, 2), "lion")
    assert "'lion'" in str(info.value)
    with pytest.raises(ValueError, match="rmsprop") as info:
        O.ScratchOptimizer([torch.ones(2, requires_grad=True)], "lion")
    assert "'lion'" in str(info.value)
    with pytest.raises(ValueError, match=r"weight_decay=-1\.0"):
        O.param_groups(nn.Linear(2, 2), -1.0)


def test_scratch_optimizer_rejects_bad_group_before_adding():
    opt = O.ScratchOptimizer([torch.ones(2, requires_grad=True)], "sgd", lr=0.1)
    with pytest.raises(ValueError, match=r"weight_decay=-1\.0"):
        opt.add_param_group({"params": [torch.ones(3, requires_grad=True)], "weight_decay": -1.0})
    assert len(opt.param_groups) == 1
