"""2-D loss surfaces for drawing optimizer trajectories over contours.

``Quadratic``: f(x) = ½ xᵀ A x with A = R diag(1, κ) Rᵀ (κ = ``condition``, R a rotation by
``angle``): a narrow valley whose curvature differs κ-fold between directions.
``Rosenbrock``: f(x, y) = (a − x)² + b (y − x²)², a curved valley with minimum (a, a²).
Both give ``value``/``grad`` in NumPy, ``torch_value`` in torch (for ``torch.optim``), and
run an optimizer from a start point with ``trajectory`` (from scratch) or ``torch_trajectory``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from storyopt_lib.optimizers import get_algorithm

__all__ = ["Quadratic", "Rosenbrock"]


class _Surface:
    """Shared trajectory code; subclasses define value, grad, torch_value, minimum, start."""

    default_start: tuple[float, float]

    def value(self, xy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def grad(self, xy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def torch_value(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _start(self, start: Any) -> np.ndarray:
        xy = np.array(self.default_start if start is None else start, dtype=np.float64)
        if xy.shape != (2,) or not np.all(np.isfinite(xy)):
            raise ValueError(f"Invalid start: start={start!r} (must be 2 finite numbers)")
        return xy

    @staticmethod
    def _check_steps(steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"Invalid steps: steps={steps!r} (must be an int >= 0)")

    def trajectory(
        self, algorithm: str | type, start: Any = None, steps: int = 100, **hparams: Any
    ) -> np.ndarray:
        """(steps + 1, 2) array of points: the start, then each from-scratch update.

        Example:
            >>> Quadratic().trajectory("sgd", steps=3, lr=0.05).shape
            (4, 2)
        """
        self._check_steps(steps)
        xy = self._start(start)
        opt = get_algorithm(algorithm)([xy], **hparams)
        path = [xy.copy()]
        for _ in range(steps):
            opt.step([self.grad(xy)])
            path.append(xy.copy())
        return np.array(path)

    def torch_trajectory(
        self,
        torch_cls: type[torch.optim.Optimizer],
        start: Any = None,
        steps: int = 100,
        **hparams: Any,
    ) -> np.ndarray:
        """The same with a ``torch.optim`` class, gradients by autograd (float64)."""
        self._check_steps(steps)
        t = torch.tensor(self._start(start), dtype=torch.float64, requires_grad=True)
        opt = torch_cls([t], **hparams)
        path = [t.detach().numpy().copy()]
        for _ in range(steps):
            opt.zero_grad()
            self.torch_value(t).backward()
            opt.step()
            path.append(t.detach().numpy().copy())
        return np.array(path)

    def grid(
        self, xlim: tuple[float, float], ylim: tuple[float, float], n: int = 200
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """X, Y, Z = f(X, Y) on an n × n grid, for ``plt.contour``."""
        x, y = np.meshgrid(np.linspace(*xlim, n), np.linspace(*ylim, n))
        return x, y, self.value(np.stack([x, y]))


@dataclass(frozen=True)
class Quadratic(_Surface):
    """f(x) = ½ xᵀ A x, A = R diag(1, condition) Rᵀ, R the rotation by ``angle`` (radians).

    The minimum is at the origin; ∇f = A x. Eigenvalues 1 and ``condition``: gradient descent
    needs lr < 2 / condition to converge and then crawls along the flat direction.
    """

    condition: float = 20.0
    angle: float = 0.0
    default_start: tuple[float, float] = (-4.0, 1.5)

    def __post_init__(self) -> None:
        if not (isinstance(self.condition, (int, float)) and self.condition >= 1):
            raise ValueError(f"Invalid condition: condition={self.condition!r} (must be >= 1)")

    @property
    def matrix(self) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        r = np.array([[c, -s], [s, c]])
        return r @ np.diag([1.0, float(self.condition)]) @ r.T

    @property
    def minimum(self) -> np.ndarray:
        return np.zeros(2)

    def value(self, xy: np.ndarray) -> np.ndarray:
        """xy: (2, ...) points; returns f at each."""
        xy = np.asarray(xy, dtype=np.float64)
        a = self.matrix
        ax = np.tensordot(a, xy, axes=1)
        return 0.5 * np.sum(xy * ax, axis=0)

    def grad(self, xy: np.ndarray) -> np.ndarray:
        return self.matrix @ np.asarray(xy, dtype=np.float64)

    def torch_value(self, t: torch.Tensor) -> torch.Tensor:
        a = torch.as_tensor(self.matrix, dtype=t.dtype)
        return 0.5 * t @ a @ t


@dataclass(frozen=True)
class Rosenbrock(_Surface):
    """f(x, y) = (a − x)² + b (y − x²)², minimum (a, a²) with f = 0.

    ∇f = (−2(a − x) − 4bx(y − x²), 2b(y − x²)).
    """

    a: float = 1.0
    b: float = 100.0
    default_start: tuple[float, float] = (-1.5, 2.0)

    def __post_init__(self) -> None:
        if not (isinstance(self.b, (int, float)) and self.b > 0):
            raise ValueError(f"Invalid b: b={self.b!r} (must be > 0)")

    @property
    def minimum(self) -> np.ndarray:
        return np.array([self.a, self.a**2], dtype=np.float64)

    def value(self, xy: np.ndarray) -> np.ndarray:
        x, y = np.asarray(xy, dtype=np.float64)
        return (self.a - x) ** 2 + self.b * (y - x**2) ** 2

    def grad(self, xy: np.ndarray) -> np.ndarray:
        x, y = np.asarray(xy, dtype=np.float64)
        return np.array([-2 * (self.a - x) - 4 * self.b * x * (y - x**2), 2 * self.b * (y - x**2)])

    def torch_value(self, t: torch.Tensor) -> torch.Tensor:
        x, y = t[0], t[1]
        return (self.a - x) ** 2 + self.b * (y - x**2) ** 2
