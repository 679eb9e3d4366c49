"""Train the story model from the command line; the same command runs under ``torchrun``.

    python -m storyopt_lib.train --preset tiny --max-steps 200 --checkpoint-dir runs/tiny
    torchrun --nproc_per_node=2 -m storyopt_lib.train --preset tiny --zero --checkpoint-dir runs/ddp

Under ``torchrun`` each process trains on its shard of every batch (``ResumableSampler`` with
``num_replicas``/``rank``) inside DistributedDataParallel (gloo on CPU, nccl on CUDA); the global
batch is ``world_size * batch_size * accum_steps`` sequences. ``--zero`` shards the optimizer state
(ZeRO-1). Rank 0 writes the checkpoint and the history; every rank may write a summary.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .training import TrainConfig, build_optimizer, local_state_bytes, resolve_device, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m storyopt_lib.train",
        description="Train the story model (storyopt_lib). Runs unchanged under "
        "`torchrun --nproc_per_node=N -m storyopt_lib.train ...` (data parallel).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("model and data")
    g.add_argument(
        "--preset", default="tiny", help="model/data preset name (storyopt_lib.model.PRESETS)"
    )
    g.add_argument(
        "--n-stories", type=int, default=None, help="stories to generate (default: the preset's)"
    )
    g.add_argument(
        "--block-size", type=int, default=None, help="context length (default: the preset's)"
    )
    g.add_argument("--d-model", type=int, default=None, help="model width (default: the preset's)")
    g.add_argument(
        "--n-layer", type=int, default=None, help="Transformer blocks (default: the preset's)"
    )
    g.add_argument(
        "--n-head", type=int, default=None, help="attention heads (default: the preset's)"
    )
    g.add_argument("--dropout", type=float, default=0.0, help="dropout probability")
    g.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="sequences per process per micro-step (default: the preset's)",
    )
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="seed of the generated corpus and of the batch order",
    )
    g = p.add_argument_group("optimization")
    g.add_argument("--max-steps", type=int, default=200, help="optimizer steps")
    g.add_argument(
        "--optimizer", default="adamw", help="sgd, adagrad, rmsprop, adam, adamw or adafactor"
    )
    g.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    g.add_argument(
        "--weight-decay",
        type=float,
        default=0.1,
        help="decoupled weight decay (weight matrices only)",
    )
    g.add_argument(
        "--schedule",
        choices=["constant", "cosine", "warmup_cosine"],
        default="warmup_cosine",
        help="learning-rate schedule",
    )
    g.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="warmup steps for warmup_cosine (default: 10%% of --max-steps)",
    )
    g.add_argument(
        "--min-lr-ratio",
        type=float,
        default=0.1,
        help="final LR as a fraction of --lr (cosine schedules)",
    )
    g.add_argument(
        "--grad-clip", type=float, default=1.0, help="max gradient norm; 0 turns clipping off"
    )
    g.add_argument("--accum-steps", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="auto: bf16 on CUDA with bf16, fp16+GradScaler on older CUDA, fp32 on CPU",
    )
    g.add_argument(
        "--zero",
        action="store_true",
        help="shard the optimizer state across processes (ZeroRedundancyOptimizer; needs torchrun)",
    )
    g = p.add_argument_group("evaluation, checkpoints, logging")
    g.add_argument(
        "--eval-every", type=int, default=50, help="evaluate every this many steps (0: never)"
    )
    g.add_argument("--eval-batches", type=int, default=20, help="validation batches per evaluation")
    g.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early stopping: evaluations without improvement (default: off)",
    )
    g.add_argument(
        "--min-delta",
        type=float,
        default=0.0,
        help="early stopping: smallest improvement that counts",
    )
    g.add_argument(
        "--checkpoint-dir",
        default=None,
        help="directory for last.pt and history.json (default: none)",
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="write last.pt every this many steps (0: only at the end)",
    )
    g.add_argument("--resume", default=None, help="checkpoint file to resume from")
    g.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of model initialisation and dropout")
    g.add_argument(
        "--log-every",
        type=int,
        default=50,
        help="print a line every this many steps when no progress bar shows (0: never)",
    )
    g.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    g.add_argument(
        "--summary",
        default=None,
        help="write a JSON summary per process to SUMMARY with .rankR.json appended",
    )
    return p  # fmt: skip


def _schedule(args: argparse.Namespace) -> Any:
    from .schedulers import Constant, CosineAnnealing, WarmupCosine

    if args.schedule == "constant":
        return Constant()
    if args.schedule == "cosine":
        return CosineAnnealing(args.max_steps, min_ratio=args.min_lr_ratio)
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, args.max_steps // 10)
    return WarmupCosine(warmup, args.max_steps, min_ratio=args.min_lr_ratio)


def _data_and_model(args: argparse.Namespace, world: int, rank: int) -> tuple:
    from .data import build_datasets, generate_stories, make_loader, story_datasets
    from .model import StorytellerModel, get_preset

    preset = get_preset(args.preset)
    block = args.block_size or preset.block_size
    if args.block_size is None and args.n_stories is None:
        train_ds, val_ds, tok = story_datasets(preset, seed=args.data_seed)
    else:
        stories = generate_stories(args.n_stories or preset.n_stories, seed=args.data_seed)
        train_ds, val_ds, tok = build_datasets(stories, block, 0.1, seed=args.data_seed)
    overrides = {"block_size": block, "dropout": args.dropout}
    for name in ("d_model", "n_layer", "n_head"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = StorytellerModel(preset.model_config(tok.vocab_size, **overrides))
    bs = args.batch_size or preset.batch_size
    train_loader = make_loader(
        train_ds, bs, shuffle=True, seed=args.data_seed, num_workers=args.num_workers,
        num_replicas=world, rank=rank,
    )  # fmt: skip
    val_loader = make_loader(val_ds, bs, shuffle=False, num_replicas=world, rank=rank)
    return model, train_loader, val_loader


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    world, rank, local_rank = 1, 0, 0
    device = args.device
    if distributed:
        world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if device == "auto":
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        dev = resolve_device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    try:
        config = TrainConfig(
            max_steps=args.max_steps, optimizer=args.optimizer, lr=args.lr,
            weight_decay=args.weight_decay, schedule=_schedule(args), precision=args.precision,
            grad_clip=args.grad_clip or None, accum_steps=args.accum_steps,
            eval_every=args.eval_every, eval_batches=args.eval_batches, patience=args.patience,
            min_delta=args.min_delta, checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every, device=device, seed=args.seed,
            log_every=args.log_every, progress=False if args.no_progress else None,
            zero=args.zero,
        )  # fmt: skip
        model, train_loader, val_loader = _data_and_model(args, world, rank)
        optimizer = build_optimizer(model, config)
        history = train(
            model, train_loader, val_loader if args.eval_every or args.patience else None,
            config, optimizer=optimizer, resume_from=args.resume,
        )  # fmt: skip
        if rank == 0 and args.checkpoint_dir:
            history.save(Path(args.checkpoint_dir) / "history.json")
        if args.summary:
            summary = {
                "rank": rank,
                "world_size": world,
                "steps": len(history),
                "final_loss": history.loss[-1] if history.loss else None,
                "best_val_loss": history.best_val_loss,
                "stop_reason": history.stop_reason,
                "optimizer_state_bytes": local_state_bytes(optimizer),
                "num_params": sum(p.numel() for p in model.parameters()),
            }
            Path(f"{args.summary}.rank{rank}.json").write_text(json.dumps(summary, indent=1))
        if rank == 0:
            last = f"loss {history.loss[-1]:.4f}" if history.loss else "no steps run"
            print(f"done: {len(history)} steps, {last}, stop reason: {history.stop_reason}")
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
