"""2-D surfaces: gradients, minima, and from-scratch trajectories equal torch.optim's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from storyopt_lib.surfaces import Quadratic, Rosenbrock

SURFACES = [Quadratic(condition=50.0, angle=0.4), Rosenbrock()]


@pytest.mark.parametrize("surface", SURFACES, ids=["quadratic", "rosenbrock"])
def test_grad_matches_autograd_and_minimum(surface):
    rng = np.random.default_rng(0)
    for xy in rng.normal(size=(5, 2)):
        t = torch.tensor(xy, requires_grad=True)
        surface.torch_value(t).backward()
        np.testing.assert_allclose(surface.grad(xy), t.grad.numpy(), rtol=1e-12, atol=1e-12)
        assert surface.value(xy) == pytest.approx(surface.torch_value(torch.tensor(xy)).item())
    np.testing.assert_allclose(surface.grad(surface.minimum), 0.0, atol=1e-12)
    assert surface.value(surface.minimum) == pytest.approx(0.0, abs=1e-12)


def test_quadratic_condition_number():
    eig = np.linalg.eigvalsh(Quadratic(condition=20.0, angle=1.0).matrix)
    np.testing.assert_allclose(eig, [1.0, 20.0])


@pytest.mark.parametrize(
    ("name", "torch_cls", "hp"),
    [
        ("sgd", torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
        ("rmsprop", torch.optim.RMSprop, {"lr": 1e-2}),
        ("adam", torch.optim.Adam, {"lr": 5e-2}),
    ],
)
@pytest.mark.parametrize("surface", SURFACES, ids=["quadratic", "rosenbrock"])
def test_trajectory_matches_torch(surface, name, torch_cls, hp):
    ours = surface.trajectory(name, steps=100, **hp)
    theirs = surface.torch_trajectory(torch_cls, steps=100, **hp)
    assert ours.shape == theirs.shape == (101, 2)
    np.testing.assert_allclose(ours[0], surface.default_start)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


def test_adam_gets_closer_to_rosenbrock_minimum():
    r = Rosenbrock()
    path = r.trajectory("adam", steps=2000, lr=2e-2)
    assert np.linalg.norm(path[-1] - r.minimum) < np.linalg.norm(path[0] - r.minimum) / 10


def test_grid_shapes():
    x, y, z = Rosenbrock().grid((-2, 2), (-1, 3), n=30)
    assert x.shape == y.shape == z.shape == (30, 30)
    assert z.min() >= 0


def test_bad_input():
    with pytest.raises(ValueError, match=r"condition=0\.5"):
        Quadratic(condition=0.5)
    with pytest.raises(ValueError, match="start="):
        Quadratic().trajectory("sgd", start=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="steps=-1"):
        Rosenbrock().trajectory("sgd", steps=-1)
    with pytest.raises(ValueError, match="'lion'"):
        Rosenbrock().trajectory("lion")
