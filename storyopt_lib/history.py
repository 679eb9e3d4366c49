"""What a training run records, per step and per evaluation; saved as JSON, drawn as curves."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["History"]


def _json_float(x: float | None) -> float | None:
    # JSON has no nan/inf: store them as null.
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass
class History:
    """A training run's record.

    Per optimizer step (one accumulation group): ``steps`` (1-based), ``loss`` (mean token loss
    over the whole effective batch), ``lr`` (the rate that step used), ``grad_norm`` (global L2
    norm of the unscaled gradient, before clipping), ``tokens_per_s``, ``loss_scale`` (fp16's
    GradScaler scale after the step, else None) and ``skipped`` (GradScaler skipped the step).
    Per evaluation: ``eval_steps`` and ``val_loss``. Then ``best_step``, ``best_val_loss`` and
    ``stop_reason`` (``"max_steps"`` or ``"early_stopping"``).

    ``best_state`` (not saved to JSON) holds the best weights in memory; :meth:`restore_best`
    loads them into a model.

    Example:
        >>> h = History()
        >>> h.steps.append(1); h.loss.append(2.5)
        >>> History.from_dict(h.to_dict()).loss
        [2.5]
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    loss_scale: list[float | None] = field(default_factory=list)
    skipped: list[bool] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_step: int | None = None
    best_val_loss: float | None = None
    stop_reason: str | None = None
    best_state: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (``best_state`` left out; nan/inf become None)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "best_state"}
        for key in ("loss", "lr", "grad_norm", "tokens_per_s", "loss_scale", "val_loss"):
            d[key] = [_json_float(x) for x in d[key]]
        d["best_val_loss"] = _json_float(self.best_val_loss)
        return {k: (list(v) if isinstance(v, list) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict` (None losses come back as nan)."""
        names = {f.name for f in fields(cls)} - {"best_state"}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"Unknown History fields: {sorted(unknown)}")
        h = cls(**{k: (list(v) if isinstance(v, list) else v) for k, v in d.items()})
        for key in ("loss", "grad_norm", "val_loss"):
            setattr(h, key, [math.nan if x is None else x for x in getattr(h, key)])
        return h

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> History:
        """Read what :meth:`save` wrote."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def restore_best(self, model: Any) -> None:
        """Load the best weights (kept in memory during training) into ``model``."""
        if self.best_state is None:
            raise ValueError("No best weights recorded: training ran no validation")
        from .checkpoint import unwrap_model

        unwrap_model(model).load_state_dict(self.best_state)

    def plot(self, axes: Any = None, smooth: int = 1) -> Any:
        """Loss (train and validation), learning rate and gradient norm, side by side.

        Args:
            axes: three matplotlib axes to draw on (default: a new 1x3 figure).
            smooth: moving-average window for the training loss.

        Returns:
            The array of axes.
        """
        import matplotlib.pyplot as plt
        import numpy as np

        if axes is None:
            _, axes = plt.subplots(1, 3, figsize=(11, 3.2), constrained_layout=True)
        ax_loss, ax_lr, ax_gn = axes
        loss = np.asarray(self.loss, dtype=float)
        if smooth > 1 and len(loss) >= smooth:
            kernel = np.ones(smooth) / smooth
            ax_loss.plot(
                self.steps[smooth - 1 :], np.convolve(loss, kernel, "valid"), label="train"
            )
        else:
            ax_loss.plot(self.steps, loss, label="train")
        if self.eval_steps:
            ax_loss.plot(self.eval_steps, self.val_loss, "o-", label="validation")
        if self.best_step is not None:
            ax_loss.axvline(self.best_step, color="gray", ls="--", lw=1, label="best")
        ax_loss.set(xlabel="step", ylabel="loss", title="Loss")
        ax_loss.legend()
        ax_lr.plot(self.steps, self.lr)
        ax_lr.set(xlabel="step", ylabel="learning rate", title="Learning rate")
        ax_gn.plot(self.steps, self.grad_norm)
        ax_gn.set(xlabel="step", ylabel="grad norm", title="Gradient norm (before clipping)")
        return axes

    def __len__(self) -> int:
        return len(self.steps)
