"""Tests of the command line ``python -m storyopt_lib.train``, alone and under ``torchrun``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from storyopt_lib.checkpoint import load_checkpoint
from storyopt_lib.train import build_parser

ROOT = Path(__file__).resolve().parents[1]
# A tiny model and corpus, fp32 on CPU, no dropout: runs differ only by float rounding.
COMMON = [
    "--preset", "tiny", "--n-stories", "60", "--block-size", "32", "--d-model", "32",
    "--n-layer", "1", "--n-head", "2", "--max-steps", "20", "--eval-every", "0",
    "--precision", "fp32", "--device", "cpu", "--lr", "1e-3", "--log-every", "0", "--no-progress",
]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "STORYOPT_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


def _run(args: list[str], nproc: int = 1) -> None:
    if nproc == 1:
        cmd = [sys.executable, "-m", "storyopt_lib.train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "storyopt_lib.train", *args]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def _final(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["step"] == 20
    return ckpt["model"]


def test_help_documents_every_flag(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, f"flag {action.option_strings} has no help text"
        assert action.option_strings[0] in text


def test_torchrun_two_processes_match_one_process_and_zero_shards_state(tmp_path):
    one, ddp, zero = tmp_path / "one", tmp_path / "ddp", tmp_path / "zero"
    # The same global batch of 8 sequences per step in all three runs.
    _run([*COMMON, "--batch-size", "8", "--checkpoint-dir", str(one), "--summary", str(one / "s")])
    _run([*COMMON, "--batch-size", "2", "--accum-steps", "2", "--checkpoint-dir", str(ddp)], 2)
    _run(
        [*COMMON, "--batch-size", "4", "--zero", "--checkpoint-dir", str(zero),
         "--summary", str(zero / "s")],
        nproc=2,
    )  # fmt: skip
    ref = _final(one)
    for run in (ddp, zero):
        got = _final(run)
        diff = max(float((got[k] - ref[k]).abs().max()) for k in ref)
        assert diff < 1e-5, f"{run.name}: max parameter difference {diff:.2e}"
    full = json.loads((one / "s.rank0.json").read_text())["optimizer_state_bytes"]
    shards = [json.loads((zero / f"s.rank{r}.json").read_text()) for r in (0, 1)]
    sizes = [s["optimizer_state_bytes"] for s in shards]
    assert all(s["world_size"] == 2 for s in shards)
    assert abs(sum(sizes) - full) <= 64  # the shards partition the state (+ step counters)
    assert all(0.3 * full < s < 0.7 * full for s in sizes), (sizes, full)
    # Rank 0 consolidated the sharded state before writing: the checkpoint holds all of it.
    opt_state = load_checkpoint(zero / "last.pt")["optimizer"]["state"]
    assert len(opt_state) == len(load_checkpoint(one / "last.pt")["optimizer"]["state"])
