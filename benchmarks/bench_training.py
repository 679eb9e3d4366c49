"""Speed of ``storyopt_lib.training.train`` against a minimal hand-written loop (one process).

Prints, on the current device (CPU unless CUDA is present):
1. tokens/s of a plain PyTorch loop and of ``train()`` on the same model, data, optimizer,
   schedule and clipping (fp32), and their ratio (target: >= 0.97);
2. model FLOP utilization: ``flops_per_token * tokens/s`` against the measured matmul rate
   (CPU) or the same measured rate on the GPU;
3. step time in fp32, bf16 and fp16 (+ GradScaler) through ``train()``.

Run: ``.venv/bin/python benchmarks/bench_training.py`` (``make bench``). Timings vary with the
machine and its load; the numbers go into docs/benchmarks.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

os.environ.setdefault("STORYOPT_PROGRESS", "0")

from storyopt_lib.data import build_datasets, generate_stories, make_loader
from storyopt_lib.model import StorytellerModel, get_preset
from storyopt_lib.optimizers import create_optimizer
from storyopt_lib.schedulers import WarmupCosine, as_lambda_lr
from storyopt_lib.training import TrainConfig, train


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024) -> float:
    """Measured FLOP/s of an ``n x n`` matmul (best of several runs)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(8):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * n**3 / best


def plain_loop(model, loader, steps: int, device, lr: float, total: int) -> float:
    """The minimal loop: forward, backward, clip, step, schedule, zero_grad. Returns tokens/s."""
    opt = create_optimizer(model, "adamw", lr=lr, weight_decay=0.1)
    sched = as_lambda_lr(opt, WarmupCosine(total // 10, total))
    model.train()
    it = iter(loader)
    tokens = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        x, y = x.to(device), y.to(device)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        tokens += y.numel()
    return tokens / (time.perf_counter() - t0)


def with_train(model, loader, steps: int, device, lr: float, total: int, precision="fp32"):
    cfg = TrainConfig(
        max_steps=steps, lr=lr, weight_decay=0.1, schedule=WarmupCosine(total // 10, total),
        precision=precision, grad_clip=1.0, device=str(device), progress=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    h = train(model, loader, None, cfg)
    dt = time.perf_counter() - t0
    return sum(loader.batch_size * loader.dataset.block_size for _ in h.steps) / dt, dt / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=120, help="timed steps per run (30 was too noisy)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each loop")
    ap.add_argument("--precision-steps", type=int, default=4, help="steps per precision")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = get_preset("tiny")
    train_ds, _, tok = build_datasets(generate_stories(600, seed=0), preset.block_size, seed=0)
    loader = make_loader(train_ds, preset.batch_size, seed=0)

    def fresh():
        torch.manual_seed(0)
        return StorytellerModel(preset.model_config(tok.vocab_size)).to(device)

    model = fresh()
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(
        f"model: preset 'tiny' d_model={preset.d_model} n_layer={preset.n_layer} "
        f"block={preset.block_size} batch={preset.batch_size}, {model.num_params():,} params"
    )
    plain_loop(fresh(), loader, 3, device, 1e-3, 100)  # warm up allocator and kernels
    with_train(fresh(), loader, 3, device, 1e-3, 100)
    plain, ours = [], []
    for _ in range(args.repeats):  # alternate so shared-machine load hits both alike
        plain.append(plain_loop(fresh(), loader, args.steps, device, 1e-3, 100))
        ours.append(with_train(fresh(), loader, args.steps, device, 1e-3, 100)[0])
    p, o = statistics.median(plain), statistics.median(ours)
    print(f"plain loop: {p:,.0f} tokens/s (median of {args.repeats} x {args.steps} steps)")
    print(f"train()   : {o:,.0f} tokens/s")
    print(f"ratio train()/plain: {o / p:.3f} (target >= 0.97)")

    rate = matmul_flops(device)
    fpt = model.flops_per_token()
    print(f"measured fp32 matmul rate: {rate / 1e9:,.1f} GFLOP/s (1024x1024)")
    print(f"training FLOPs per token: {fpt:,}")
    print(f"model FLOP utilization (train()): {fpt * o / rate:.1%} of the measured matmul rate")

    for precision in ("fp32", "bf16", "fp16"):
        _, per_step = with_train(
            fresh(), loader, args.precision_steps, device, 1e-3, 100, precision
        )
        print(f"{precision}: {per_step * 1e3:,.0f} ms/step")


if __name__ == "__main__":
    main()
