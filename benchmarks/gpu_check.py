"""GPU check (``make gpu-check``): fp32 vs bf16 vs fp16 + GradScaler on a CUDA device, <= 5 min.

Trains the story model a few hundred updates in each precision through ``storyopt_lib.training``
(same seed, data and schedule), then checks that each mixed-precision run's final validation loss
is within 3% of fp32's, and prints step times, speed-ups over fp32, tokens/s and model FLOP
utilization (against the measured matmul rate of that dtype on this device). Exits with status 0
and a clear message on a machine without CUDA; status 1 if a check fails.

Run: ``.venv/bin/python benchmarks/gpu_check.py [--steps 300]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

os.environ.setdefault("STORYOPT_PROGRESS", "0")


def matmul_rate(dtype: torch.dtype, n: int = 8192) -> float:
    """Measured FLOP/s of an n x n matmul in ``dtype`` on the current CUDA device."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    reps = 10
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per precision")
    ap.add_argument("--d-model", type=int, default=384)
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-head", type=int, default=6)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n-stories", type=int, default=6000)
    ap.add_argument("--tolerance", type=float, default=0.03, help="relative loss tolerance")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing to check (run it on a GPU).")
        return 0

    from storyopt_lib.data import build_datasets, generate_stories, make_loader
    from storyopt_lib.model import ModelConfig, StorytellerModel
    from storyopt_lib.schedulers import WarmupCosine
    from storyopt_lib.training import TrainConfig, resolve_precision, train

    t_start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name()
    print(f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    stories = generate_stories(args.n_stories, seed=0)
    train_ds, val_ds, tok = build_datasets(stories, args.block_size, seed=0)
    cfg_model = ModelConfig(
        vocab_size=tok.vocab_size, block_size=args.block_size, d_model=args.d_model,
        n_head=args.n_head, n_layer=args.n_layer,
    )  # fmt: skip
    tokens_per_step = args.batch_size * args.block_size
    results = {}
    for precision in ("fp32", "bf16", "fp16"):
        try:
            resolve_precision(precision, torch.device("cuda"))
        except ValueError as e:
            print(f"{precision}: skipped ({e})")
            continue
        torch.manual_seed(0)
        model = StorytellerModel(cfg_model)
        fpt = model.flops_per_token()
        cfg = TrainConfig(
            max_steps=args.steps, lr=1e-3, weight_decay=0.1, precision=precision,
            schedule=WarmupCosine(args.steps // 10, args.steps, min_ratio=0.1), grad_clip=1.0,
            device="cuda", eval_every=args.steps, eval_batches=20, progress=False, seed=0,
        )  # fmt: skip
        loader = make_loader(train_ds, args.batch_size, seed=0)
        val_loader = make_loader(val_ds, args.batch_size, shuffle=False)
        torch.cuda.synchronize()
        t = time.perf_counter()
        h = train(model, loader, val_loader, cfg)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
        # Steady-state step time: median over the second half (no warm-up, no evaluation).
        half = h.tokens_per_s[len(h.tokens_per_s) // 2 :]
        tps = sorted(half)[len(half) // 2]
        results[precision] = {
            "val": h.val_loss[-1], "train": sum(h.loss[-20:]) / 20, "tps": tps,
            "ms": tokens_per_step / tps * 1e3, "wall": wall, "fpt": fpt,
            "skipped": sum(h.skipped),
        }  # fmt: skip
        r = results[precision]
        print(
            f"{precision}: val loss {r['val']:.4f}, train loss (last 20) {r['train']:.4f}, "
            f"{r['ms']:.1f} ms/step, {tps:,.0f} tokens/s, wall {wall:.1f} s"
            + (f", {r['skipped']} steps skipped by GradScaler" if precision == "fp16" else "")
        )
        del model
        torch.cuda.empty_cache()

    ok = True
    base = results.get("fp32")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    for precision, r in results.items():
        rate = matmul_rate(dtypes[precision])
        mfu = r["fpt"] * r["tps"] / rate
        line = (
            f"{precision}: matmul rate {rate / 1e12:.1f} TFLOP/s, model FLOP utilization {mfu:.1%}"
        )
        if base is not None and precision != "fp32":
            rel = abs(r["val"] - base["val"]) / base["val"]
            good = rel <= args.tolerance
            ok &= good
            line += (
                f", speed-up over fp32 {base['ms'] / r['ms']:.2f}x, val loss vs fp32 "
                f"{rel:.2%} ({'OK' if good else 'FAIL'}, tolerance {args.tolerance:.0%})"
            )
        print(line)
    print(f"total time {time.perf_counter() - t_start:.0f} s; {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
