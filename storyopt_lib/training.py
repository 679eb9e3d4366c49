"""The training loop of sections 7.6-7.7, made correct: AMP, clipping, accumulation, resume, DDP.

One optimizer step (a *step* below) processes one accumulation group of ``accum_steps``
micro-batches. With token counts :math:`n_i` and per-micro-batch mean losses :math:`\\ell_i`,
the group's loss is the mean over all its tokens,

.. math:: L = \\sum_i \\ell_i \\, n_i / N, \\qquad N = \\sum_i n_i,

so accumulation equals one large batch, and a final partial group (the end of an epoch) is
normalised by its own ``N``. Per step::

    with autocast: loss_i = model(x_i, y_i)          # DDP: no gradient sync but on the last i
    scaler.scale(loss_i * n_i / N).backward()
    scaler.unscale_(optimizer); clip_grad_norm_       # the norm is of the true gradient
    scaler.step(optimizer); scaler.update()           # fp16: skipped if a gradient overflowed
    scheduler.step() only if the step was not skipped # the schedule counts real updates

``TrainConfig`` is checked where it is built; device, precision, checkpoint directory and a
resumed checkpoint's shapes are checked by ``train`` before the first step.

Example:
    >>> cfg = TrainConfig(max_steps=100, lr=3e-3, precision="fp32")
    >>> history = train(model, train_loader, val_loader, cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import (
    CheckpointError,
    check_model_shapes,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    unwrap_model,
)
from .history import History
from .optimizers import state_bytes

__all__ = [
    "CheckpointError",
    "History",
    "TrainConfig",
    "build_optimizer",
    "evaluate",
    "load_checkpoint",
    "local_state_bytes",
    "resolve_device",
    "resolve_precision",
    "save_checkpoint",
    "train",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CHECKPOINT_NAME = "last.pt"


def _bad(name: str, value: Any, rule: str) -> ValueError:
    return ValueError(f"Invalid {name}: {name}={value!r} ({rule})")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass
class TrainConfig:
    """Everything ``train`` needs besides the model and the data; checked when built.

    Args:
        max_steps: optimizer steps (accumulation groups) to run, >= 1. A step GradScaler skips
            counts as a step but does not advance the schedule.
        optimizer, lr, weight_decay, optimizer_kwargs: passed to
            ``storyopt_lib.optimizers.create_optimizer`` (decay only on weight matrices).
        schedule: a ``storyopt_lib.schedulers`` object (multiplier of ``lr`` at update k);
            None means constant.
        precision: "auto" (bf16 on CUDA with bf16, fp16 + GradScaler on older CUDA, fp32 on
            CPU), "fp32", "bf16" (autocast, no scaler) or "fp16" (autocast + GradScaler).
        grad_clip: max global gradient L2 norm, or None for no clipping.
        accum_steps: micro-batches per optimizer step, >= 1.
        eval_every: evaluate every this many steps (0: never); eval_batches: at most this many
            validation batches (None: all).
        patience: stop after this many evaluations in a row without an improvement larger than
            ``min_delta`` (None: no early stopping).
        restore_best: at the end, load the best validation weights into the model.
        checkpoint_dir: where ``last.pt`` is written (None: nowhere); checkpoint_every: write it
            every this many steps (0: only at the end).
        device: "auto", "cpu", "cuda", "cuda:1", ...; seed: seeds Python, NumPy and torch at
            the start of a fresh run (plus the process rank under DDP).
        log_every: print a line every this many steps when no progress bar shows (0: never).
        progress: progress bar flag for ``storyopt_lib.notebook.progress_enabled``.
        zero: shard the optimizer state across processes (``ZeroRedundancyOptimizer``, DDP only).
        label_smoothing: passed to the model's loss.

    Example:
        >>> TrainConfig(max_steps=10, accum_steps=2).accum_steps
        2
    """

    max_steps: int = 1000
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.1
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)
    schedule: Any = None
    precision: str = "auto"
    grad_clip: float | None = 1.0
    accum_steps: int = 1
    eval_every: int = 0
    eval_batches: int | None = None
    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = 0
    device: str = "auto"
    seed: int = 0
    log_every: int = 0
    progress: bool | None = None
    zero: bool = False
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not _is_int(self.max_steps) or self.max_steps < 1:
            raise _bad("max_steps", self.max_steps, "must be an integer >= 1")
        if not _is_int(self.accum_steps) or self.accum_steps < 1:
            raise _bad("accum_steps", self.accum_steps, "must be an integer >= 1")
        if self.grad_clip is not None and (
            isinstance(self.grad_clip, bool)
            or not isinstance(self.grad_clip, (int, float))
            or not self.grad_clip > 0
            or not math.isfinite(self.grad_clip)
        ):
            raise _bad("grad_clip", self.grad_clip, "must be None or a finite number > 0")
        if self.patience is not None and (not _is_int(self.patience) or self.patience < 0):
            raise _bad("patience", self.patience, "must be None or an integer >= 0")
        if not isinstance(self.min_delta, (int, float)) or not self.min_delta >= 0:
            raise _bad("min_delta", self.min_delta, "must be >= 0")
        if self.precision not in PRECISIONS:
            raise _bad("precision", self.precision, f"must be one of {PRECISIONS}")
        if not isinstance(self.lr, (int, float)) or not self.lr >= 0:
            raise _bad("lr", self.lr, "must be >= 0")
        if not isinstance(self.weight_decay, (int, float)) or not self.weight_decay >= 0:
            raise _bad("weight_decay", self.weight_decay, "must be >= 0")
        for name in ("eval_every", "checkpoint_every", "log_every", "seed"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise _bad(name, v, "must be an integer >= 0")
        if self.eval_batches is not None and (
            not _is_int(self.eval_batches) or self.eval_batches < 1
        ):
            raise _bad("eval_batches", self.eval_batches, "must be None or an integer >= 1")
        if not isinstance(self.optimizer, str):
            raise _bad("optimizer", self.optimizer, "must be a name such as 'adamw'")
        if self.schedule is not None and (
            not callable(self.schedule) or isinstance(self.schedule, type)
        ):
            raise _bad(
                "schedule", self.schedule, "must be a storyopt_lib.schedulers object or None"
            )
        if not isinstance(self.device, (str, torch.device)):
            raise _bad("device", self.device, "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise _bad(
                    "device", self.device, "must be 'auto', 'cpu', 'cuda' or 'cuda:N'"
                ) from None
        if not 0.0 <= self.label_smoothing < 1.0:
            raise _bad("label_smoothing", self.label_smoothing, "must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the schedule as ``{"name": class name, **fields}``) for checkpoints."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        s = self.schedule
        if s is not None:
            fields_ = dataclasses.asdict(s) if dataclasses.is_dataclass(s) else {"repr": repr(s)}
            d["schedule"] = {"name": type(s).__name__, **fields_}
        d["optimizer_kwargs"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in self.optimizer_kwargs.items()
        }
        d["checkpoint_dir"] = (
            None if self.checkpoint_dir is None else os.fspath(self.checkpoint_dir)
        )
        d["device"] = str(self.device)
        return d


# ---- device and precision -----------------------------------------------------------------


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> CUDA when available, else CPU; an unavailable device raises ``ValueError``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _bad("device", str(device), "CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise _bad("device", str(device), f"only {torch.cuda.device_count()} CUDA devices")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise _bad("device", str(device), "MPS is not available on this machine")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision to run on ``device``: "auto" resolved; one the device cannot run raises."""
    if precision not in PRECISIONS:
        raise _bad("precision", precision, f"must be one of {PRECISIONS}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        return "fp32"
    if precision == "fp32":
        return precision
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise _bad("precision", precision, f"device {device} does not support bfloat16")
    try:
        with torch.autocast(device.type, dtype=_DTYPES[precision]):
            a = torch.ones(4, 4, device=device)
            ok = (a @ a).dtype == _DTYPES[precision]
        if precision == "fp16":
            torch.amp.GradScaler(device.type)
    except (RuntimeError, ValueError, AssertionError) as e:
        raise _bad("precision", precision, f"device {device} cannot run it: {e}") from None
    if not ok:
        raise _bad("precision", precision, f"autocast on {device} does not produce {precision}")
    return precision


def _check_writable(directory: str | os.PathLike) -> Path:
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise _bad("checkpoint_dir", os.fspath(directory), f"not writable: {e}") from None
    return path


# ---- evaluation ---------------------------------------------------------------------------


def _dist_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _tokens(y: torch.Tensor) -> int:
    return int((y != -100).sum())


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: Iterable,
    max_batches: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> float:
    """Mean token loss over (at most ``max_batches`` of) ``loader``, in eval mode.

    .. math:: L = \\sum_b \\ell_b n_b / \\sum_b n_b

    with :math:`\\ell_b` the model's mean loss on batch b and :math:`n_b` its target tokens;
    under ``torch.distributed`` the sums run over every process. The model's train/eval mode is
    restored afterwards.

    Args:
        model: called as ``model(x, y) -> (logits, loss)``.
        loader: yields ``(x, y)`` batches.
        max_batches: stop after this many batches (None: all).
        device: where batches go (default: the model's device).
        precision: "fp32", "bf16" or "fp16" autocast.

    Example:
        >>> evaluate(model, val_loader, max_batches=10)  # doctest: +SKIP
        2.71
    """
    if max_batches is not None and (not _is_int(max_batches) or max_batches < 1):
        raise _bad("max_batches", max_batches, "must be None or an integer >= 1")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    amp = precision in _DTYPES
    try:
        for b, (x, y) in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            n = _tokens(y)
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=_DTYPES.get(precision), enabled=amp):
                _, loss = model(x, y)
            total[0] += loss.double() * n
            total[1] += n
    finally:
        model.train(was_training)
    world, _ = _dist_world()
    if world > 1:
        dist.all_reduce(total)
    if total[1] == 0:
        raise ValueError("evaluate: the loader yielded no batches")
    return float(total[0] / total[1])


# ---- the loop ------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _in_notebook() -> bool:
    if "google.colab" in sys.modules:
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _want_progress(flag: bool | None) -> bool:
    from .notebook import progress_enabled

    if not progress_enabled(flag):
        return False
    return _in_notebook() or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


def _import_zero() -> Any:
    # torch.distributed.optim imports torch.jit.script, deprecated in torch 2.13; nothing we call.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning
        )
        from torch.distributed.optim import ZeroRedundancyOptimizer
    return ZeroRedundancyOptimizer


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """``create_optimizer`` from the config; with ``config.zero``, a ``ZeroRedundancyOptimizer``
    of the same class and parameter groups (needs an initialised process group)."""
    from .optimizers import create_optimizer

    opt = create_optimizer(
        model,
        config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        **config.optimizer_kwargs,
    )
    if not config.zero:
        return opt
    zero_cls = _import_zero()
    # Only what the class's constructor takes (AdamW's defaults hold Adam's extra keys).
    accepted = inspect.signature(type(opt).__init__).parameters
    defaults = {k: v for k, v in opt.defaults.items() if k in accepted}
    groups = [
        {k: v for k, v in g.items() if k == "params" or k in accepted} for g in opt.param_groups
    ]
    return zero_cls(groups, optimizer_class=type(opt), **defaults)


def local_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state held by this process (its ZeRO shard, if sharded).

    Counted as ``optimizers.state_bytes`` counts them, so the two figures agree.
    """
    return state_bytes(getattr(optimizer, "optim", optimizer))


class _Batches:
    """The training loader as an endless stream with a resumable ``(epoch, batch_index)``."""

    def __init__(self, loader: Iterable, epoch: int, batch_index: int) -> None:
        self.loader, self.epoch, self.batch_index = loader, epoch, batch_index
        self.sampler = getattr(loader, "sampler", None)
        self._it = self._start()

    def _start(self) -> Iterator:
        skip = self.batch_index
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        if hasattr(self.sampler, "set_start"):
            self.sampler.set_start(self.batch_index)
            skip = 0
        it = iter(self.loader)
        for _ in range(skip):  # a loader without set_start: read and drop (same order needed)
            next(it)
        return it

    def group(self, k: int) -> list:
        """Up to ``k`` batches, all from one epoch (fewer only at the end of an epoch)."""
        out: list = []
        while len(out) < k:
            try:
                out.append(next(self._it))
                self.batch_index += 1
            except StopIteration:
                if out:
                    break
                if self.batch_index == 0:
                    raise ValueError("train_loader yields no batches") from None
                self.epoch, self.batch_index = self.epoch + 1, 0
                self._it = self._start()
        return out


def train(
    model: torch.nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    config: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    resume_from: str | os.PathLike | None = None,
) -> History:
    """Train ``model`` for ``config.max_steps`` optimizer steps; return the :class:`History`.

    Under ``torch.distributed`` (``torchrun``) the model is wrapped in DistributedDataParallel,
    gradients are synchronised only on the last micro-batch of a group, and rank 0 writes the
    checkpoints. Everything the config implies is checked before the first step.

    Args:
        model: ``model(x, y) -> (logits, loss)``, loss the mean over target tokens.
        train_loader: yields ``(x, y)``; a ``storyopt_lib.data.make_loader`` loader makes resume
            exact (its sampler restarts mid-epoch).
        val_loader: for ``eval_every``/``patience`` (None: no evaluation).
        config: a :class:`TrainConfig`.
        optimizer: default ``create_optimizer(model, config.optimizer, ...)``.
        scheduler: default ``as_lambda_lr(optimizer, config.schedule)``; stepped once per real
            optimizer update.
        resume_from: a checkpoint to continue from (model, optimizer, scheduler, scaler, RNG,
            data position, history); the run continues up to ``config.max_steps``.

    Raises:
        FloatingPointError: a non-finite loss or gradient in fp32/bf16 (naming the step).

    Example:
        >>> h = train(model, train_loader, val_loader, TrainConfig(max_steps=200, eval_every=50))
        >>> h.plot()  # doctest: +SKIP
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"Invalid config: config={type(config).__name__} (must be a TrainConfig)")
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    ckpt_dir = _check_writable(config.checkpoint_dir) if config.checkpoint_dir else None
    if (config.eval_every or config.patience is not None) and val_loader is None:
        raise ValueError("eval_every/patience need a val_loader (got val_loader=None)")
    world, rank = _dist_world()
    if config.zero and optimizer is None and not (dist.is_available() and dist.is_initialized()):
        raise _bad("zero", True, "ZeroRedundancyOptimizer needs torch.distributed (torchrun)")
    ckpt = None
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, map_location="cpu")
        check_model_shapes(model, ckpt["model"], source=f"checkpoint {resume_from}")
        saved = (ckpt.get("config") or {}).get("schedule")
        if saved != config.to_dict()["schedule"]:
            warnings.warn(
                f"Resuming {resume_from} with schedule {config.to_dict()['schedule']} but it was "
                f"trained with {saved}: the learning rate will not continue smoothly",
                stacklevel=2,
            )

    raw = unwrap_model(model).to(device)
    if ckpt is None:
        _seed_everything(config.seed + rank)
    else:
        raw.load_state_dict(ckpt["model"])
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net: torch.nn.Module = DDP(
            raw, device_ids=[device.index] if device.type == "cuda" else None
        )
    else:
        net = raw
    if optimizer is None:
        optimizer = build_optimizer(raw, config)
    if scheduler is None:
        from .schedulers import Constant, as_lambda_lr

        scheduler = as_lambda_lr(optimizer, config.schedule or Constant())
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    amp = dict(device_type=device.type, dtype=_DTYPES.get(precision), enabled=precision != "fp32")
    loss_kwargs = {"label_smoothing": config.label_smoothing} if config.label_smoothing else {}

    history, step, bad_evals, pos = History(), 0, 0, (0, 0)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scheduler"] is not None:
            scheduler.load_state_dict(dict(ckpt["scheduler"]))
        if ckpt["scaler"]:
            scaler.load_state_dict(ckpt["scaler"])
        extra = ckpt["extra"]
        history = History.from_dict(extra["history"])
        history.best_state = extra.get("best_state")
        bad_evals = int(extra.get("bad_evals", 0))
        step, pos = int(ckpt["step"]), tuple(ckpt["data_position"] or (0, 0))
    batches = _Batches(train_loader, *pos)
    if ckpt is not None:  # after the loader's iterator exists: it may draw from the RNG
        states = ckpt["rng"]
        set_rng_state(states[rank] if len(states) == world else states[0])

    def checkpoint() -> None:
        if world > 1 and hasattr(optimizer, "consolidate_state_dict"):
            optimizer.consolidate_state_dict(to=0)
        rng = [get_rng_state()]
        if world > 1:
            gathered: list[Any] | None = [None] * world if rank == 0 else None
            dist.gather_object(rng[0], gathered, dst=0)
            rng = gathered or rng
        if rank == 0:
            extra = {"history": history.to_dict(), "bad_evals": bad_evals}
            if history.best_state is not None:
                extra["best_state"] = history.best_state
            save_checkpoint(
                ckpt_dir / CHECKPOINT_NAME,
                raw,
                optimizer,
                scheduler,
                scaler,
                step=step,
                best_val_loss=history.best_val_loss,
                config=config.to_dict(),
                data_position=(batches.epoch, batches.batch_index),
                rng=rng,
                extra=extra,
            )

    bar = None
    if rank == 0 and _want_progress(config.progress):
        from tqdm.auto import tqdm

        bar = tqdm(total=config.max_steps, initial=step, desc="train", unit="step")
    net.train()
    last_saved = step if ckpt is not None else -1
    stop_reason = "max_steps"
    try:
        while step < config.max_steps:
            t0 = time.perf_counter()
            group = batches.group(config.accum_steps)
            counts = [_tokens(y) for _, y in group]
            n_total = sum(counts)
            loss_sum = torch.zeros((), device=device)
            for i, ((x, y), n) in enumerate(zip(group, counts, strict=True)):
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                last = i == len(group) - 1
                sync = net.no_sync() if world > 1 and not last else contextlib.nullcontext()
                with sync:
                    with torch.autocast(**amp):
                        _, loss = net(x, y, **loss_kwargs)
                    part = loss.float() * (n / n_total)
                    scaler.scale(part).backward()
                loss_sum += part.detach()
            scaler.unscale_(optimizer)
            params = [p for p in raw.parameters() if p.grad is not None]
            if config.grad_clip is not None:
                gnorm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            else:
                gnorm = torch.nn.utils.get_total_norm([p.grad for p in params])
            loss_val, norm_val = float(loss_sum), float(gnorm)
            if precision != "fp16" and not (math.isfinite(loss_val) and math.isfinite(norm_val)):
                raise FloatingPointError(
                    f"Non-finite loss or gradient at step {step + 1} (loss={loss_val}, "
                    f"grad_norm={norm_val}, precision={precision}); stopped before the update"
                )
            lr = float(optimizer.param_groups[0]["lr"])
            scale_before = scaler.get_scale() if scaler.is_enabled() else None
            scaler.step(optimizer)
            scaler.update()
            scale = scaler.get_scale() if scaler.is_enabled() else None
            skipped = scale is not None and scale < scale_before
            if world > 1:  # report the mean loss; check every rank made the same skip decision
                stats = torch.stack([loss_sum.float(), torch.tensor(float(skipped), device=device)])
                dist.all_reduce(stats)
                loss_val = float(stats[0]) / world
                if float(stats[1]) not in (0.0, float(world)):
                    raise RuntimeError(f"Ranks disagree on skipping step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            if not skipped:
                scheduler.step()
            step += 1
            dt = time.perf_counter() - t0
            history.steps.append(step)
            history.loss.append(loss_val)
            history.lr.append(lr)
            history.grad_norm.append(norm_val)
            history.tokens_per_s.append(n_total * world / dt if dt > 0 else math.nan)
            history.loss_scale.append(scale)
            history.skipped.append(bool(skipped))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss_val:.3f}", lr=f"{lr:.2e}", tok_s=f"{history.tokens_per_s[-1]:.0f}"
                )
            elif config.log_every and step % config.log_every == 0 and rank == 0:
                print(
                    f"step {step:>6} | loss {loss_val:.4f} | lr {lr:.3e} | grad norm "
                    f"{norm_val:.3f} | {history.tokens_per_s[-1]:.0f} tok/s",
                    flush=True,
                )

            stop = False
            if config.eval_every and step % config.eval_every == 0:
                val = evaluate(raw, val_loader, config.eval_batches, device, precision)
                history.eval_steps.append(step)
                history.val_loss.append(val)
                best = history.best_val_loss
                if best is None or val < best - config.min_delta:
                    history.best_val_loss, history.best_step, bad_evals = val, step, 0
                    history.best_state = {
                        k: v.detach().to("cpu", copy=True) for k, v in raw.state_dict().items()
                    }
                else:
                    bad_evals += 1
                    stop = config.patience is not None and bad_evals >= config.patience
                if rank == 0 and bar is None and config.log_every:
                    print(f"step {step:>6} | val loss {val:.4f}", flush=True)
            if (
                ckpt_dir is not None
                and config.checkpoint_every
                and step % config.checkpoint_every == 0
            ):
                checkpoint()
                last_saved = step
            if stop:
                stop_reason = "early_stopping"
                break
    finally:
        if bar is not None:
            bar.close()
    history.stop_reason = stop_reason
    if ckpt_dir is not None and last_saved != step:
        checkpoint()
    if config.restore_best and history.best_state is not None:
        raw.load_state_dict(history.best_state)
    return history
