"""Time one optimizer step over 1 M float32 parameters: ScratchOptimizer vs torch.optim.

The from-scratch rules (storyopt_lib.optimizers) run through ``ScratchOptimizer``; the reference
is the same-named ``torch.optim`` class with ``foreach=False`` (its single-tensor loop). Target
(issue 3): ratio <= 2. Run:

    .venv/bin/python benchmarks/bench_optimizers.py [--repeats 200] [--threads N]

Prints one line per algorithm: median ms per step for both and the ratio. Timings depend on the
machine and its load; the ratio is the number to compare.

Why ``--tune-malloc``: written as plain array expressions (``param -= lr * g``), the rules
allocated a few parameter-sized temporaries per step; with glibc's default malloc every one
page-faulted its memory back in (``getrusage``), 3-6x slower than torch. The rules now compute into
a preallocated workspace, so the default allocator is the setting that counts (issue 3).
``--tune-malloc`` raises glibc's mmap and trim thresholds (``mallopt``, as
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` would) so freed blocks are reused, the
effect PyTorch's CPU tuning guide gets from jemalloc/tcmalloc; it also spares torch's own
temporaries (``foreach=False`` Adam allocates two per tensor per step). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import resource
import statistics
import time

import torch

from storyopt_lib.optimizers import ScratchOptimizer

# 1 M parameters in a few tensors of model-like shapes: 4 x (500 x 500) matrices.
SHAPES = [(500, 500)] * 4
ALGORITHMS = {
    "sgd": (torch.optim.SGD, {"lr": 1e-3}),
    "sgd_momentum": (torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
    "adagrad": (torch.optim.Adagrad, {"lr": 1e-2}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 1e-2}),
    "adam": (torch.optim.Adam, {"lr": 1e-3}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-2}),
}


def _params(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in SHAPES:
        p = torch.randn(shape, generator=gen).requires_grad_()
        p.grad = torch.randn(shape, generator=gen)
        params.append(p)
    return params


def _tune_malloc() -> bool:
    """Keep freed blocks in the heap (glibc only): M_TRIM_THRESHOLD -1, M_MMAP_THRESHOLD -3."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(-1, 1 << 30)) and bool(libc.mallopt(-3, 1 << 30))


def _time_pair(a: torch.optim.Optimizer, b: torch.optim.Optimizer, repeats: int) -> tuple:
    """Median seconds per step of a and b, timed alternately so both see the same load."""
    for _ in range(3):  # warm-up: state allocation, first-step branches
        a.step()
        b.step()
    times_a, times_b = [], []
    for _ in range(repeats):
        for opt, times in ((a, times_a), (b, times_b)):
            t0 = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - t0)
    return statistics.median(times_a), statistics.median(times_b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--tune-malloc", action="store_true", help="see the module docstring")
    args = parser.parse_args()
    tuned = _tune_malloc() if args.tune_malloc else False
    if args.threads:
        torch.set_num_threads(args.threads)
    n = sum(torch.Size(s).numel() for s in SHAPES)
    print(
        f"params: {n:,} float32 in {len(SHAPES)} tensors; threads: {torch.get_num_threads()}; "
        f"malloc tuned: {tuned}"
    )
    print(f"{'algorithm':<14}{'scratch ms':>12}{'torch ms':>12}{'ratio':>8}{'faults/step':>13}")
    worst = 0.0
    for name, (torch_cls, hp) in ALGORITHMS.items():
        algorithm = "sgd" if name.startswith("sgd") else name
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        scratch, reference = _time_pair(
            ScratchOptimizer(_params(0), algorithm, **hp),
            torch_cls(_params(0), foreach=False, **hp),
            args.repeats,
        )
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / (args.repeats + 3)
        ratio = scratch / reference
        worst = max(worst, ratio)
        print(
            f"{name:<14}{scratch * 1e3:>12.3f}{reference * 1e3:>12.3f}{ratio:>8.2f}{faults:>13.0f}"
        )
    print(f"worst ratio: {worst:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
