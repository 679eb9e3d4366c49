"""Checkpoints that survive a crash and load safely: atomic writes, ``weights_only`` loads.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python values (dict, list,
tuple, str, int, float, bool, None), so it loads with ``torch.load(weights_only=True)``, which
refuses files that carry arbitrary pickled objects (the source chapter's ``torch.load(filename)``
would run them). Contents::

    format, version, step, model, optimizer, scheduler, scaler, best_val_loss,
    config, rng (one entry per process), data_position (epoch, batch_index), extra

Writing goes to a temporary file in the same directory, then ``flush``, ``os.fsync`` and
``os.replace``: a crash part-way leaves the previous checkpoint untouched.

Example:
    >>> save_checkpoint("ckpt/last.pt", model, optimizer, step=100)  # doctest: +SKIP
    >>> ckpt = load_checkpoint("ckpt/last.pt", model, optimizer)     # doctest: +SKIP
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "atomic_save",
    "check_model_shapes",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
    "unwrap_model",
]

FORMAT = "storyopt-checkpoint"
VERSION = 1
_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: truncated, foreign, unsafe or of another model."""


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` (or ``torch.compile``), else ``model``."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _check_plain(obj: Any, where: str) -> None:
    """Raise ``TypeError`` if ``obj`` holds anything ``weights_only`` loading would refuse."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint key {where}[{k!r}] is a {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise TypeError(
            f"checkpoint value {where} is a {type(obj).__name__}: only tensors and plain Python "
            "values can be stored (they load with torch.load(weights_only=True))"
        )


# ---- RNG state as plain values -------------------------------------------------------------


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and plain values."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [
            str(np_name),
            [int(k) for k in np_keys],
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((int(py_version), tuple(int(x) for x in py_state), py_gauss))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda[: torch.cuda.device_count()]])


# ---- writing ------------------------------------------------------------------------------


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def _scheduler_state(scheduler: Any) -> dict[str, Any]:
    state = dict(scheduler.state_dict())
    # LambdaLR stores its lambdas' __dict__; the schedule itself lives in the config.
    if "lr_lambdas" in state:
        state["lr_lambdas"] = [None] * len(state["lr_lambdas"])
    return state


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    *,
    step: int = 0,
    best_val_loss: float | None = None,
    config: Mapping[str, Any] | None = None,
    data_position: tuple[int, int] | None = None,
    rng: list[dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; refuse a model with non-finite weights.

    Args:
        path: file to write (its directory is created).
        model: the model (a DDP wrapper is unwrapped).
        optimizer, scheduler, scaler: saved through their ``state_dict()`` when given. A
            ``ZeroRedundancyOptimizer`` must have been consolidated (``consolidate_state_dict``).
        step: optimizer steps done.
        best_val_loss: best validation loss so far.
        config: the training configuration as a plain dict.
        data_position: ``(epoch, batch_index)`` of the training loader.
        rng: generator states, one :func:`get_rng_state` dict per process (default: this one's).
        extra: other plain values (history, early-stopping counters, best weights).

    Example:
        >>> save_checkpoint("run/last.pt", model, optimizer, step=10)  # doctest: +SKIP
    """
    model_state = unwrap_model(model).state_dict()
    for name, t in model_state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"Refusing to write checkpoint {path}: parameter {name!r} has non-finite values"
            )
    obj: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(step),
        "model": model_state,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": _scheduler_state(scheduler) if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "best_val_loss": None if best_val_loss is None else float(best_val_loss),
        "config": dict(config) if config is not None else None,
        "rng": list(rng) if rng is not None else [get_rng_state()],
        "data_position": list(data_position) if data_position is not None else None,
        "extra": dict(extra) if extra is not None else {},
    }
    _check_plain(obj, "checkpoint")
    return atomic_save(obj, path)


# ---- reading ------------------------------------------------------------------------------


def check_model_shapes(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Raise :class:`CheckpointError` naming the first parameter whose name or shape differs."""
    own = unwrap_model(model).state_dict()
    for name, t in own.items():
        if name not in state:
            raise CheckpointError(f"{source} has no parameter {name!r} (a different model?)")
        if tuple(state[name].shape) != tuple(t.shape):
            raise CheckpointError(
                f"{source} does not fit the model: parameter {name!r} has shape "
                f"{tuple(state[name].shape)} in the checkpoint but {tuple(t.shape)} in the model"
            )
    for name in state:
        if name not in own:
            raise CheckpointError(f"{source} has parameter {name!r}, which the model lacks")


def load_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
    *,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = False,
    rank: int = 0,
) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` and restore what is given.

    Args:
        path: the checkpoint file.
        model, optimizer, scheduler, scaler: restored in place when given (the model's shapes
            are checked first; the error names the first mismatching parameter).
        map_location: where tensors are loaded.
        restore_rng: also restore the generator states (entry ``rank`` of ``rng``).
        rank: which process's generator states to restore.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: a missing, truncated, foreign or unsafe file (the message names it), or
            a checkpoint of a differently shaped model.

    Example:
        >>> ckpt = load_checkpoint("run/last.pt", model)  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError (unsafe), RuntimeError (truncated), EOFError, ...
        raise CheckpointError(
            f"Cannot load checkpoint {path}: not a complete storyopt checkpoint, or it holds "
            f"objects that weights_only loading refuses ({type(e).__name__}: {str(e)[:200]})"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a storyopt checkpoint (no format={FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {ckpt.get('version')!r}, need {VERSION}"
        )
    if model is not None:
        check_model_shapes(model, ckpt["model"], source=f"checkpoint {path}")
        unwrap_model(model).load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt["optimizer"] is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt["scheduler"] is not None:
        scheduler.load_state_dict(dict(ckpt["scheduler"]))
    if scaler is not None and ckpt["scaler"]:
        scaler.load_state_dict(ckpt["scaler"])
    if restore_rng:
        states = ckpt["rng"]
        set_rng_state(states[rank] if rank < len(states) else states[0])
    return ckpt
