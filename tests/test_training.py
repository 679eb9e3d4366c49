"""Tests of storyopt_lib.training: bad input, accumulation, fp16 skips, early stopping, resume."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from storyopt_lib import training
from storyopt_lib.checkpoint import CheckpointError, load_checkpoint
from storyopt_lib.data import build_datasets, generate_stories, make_loader
from storyopt_lib.history import History
from storyopt_lib.schedulers import LinearWarmup, WarmupCosine, as_lambda_lr
from storyopt_lib.training import TrainConfig, evaluate, resolve_precision, train

ROOT = Path(__file__).resolve().parents[1]
_DATA: dict = {}


def tiny_data(n_windows: int = 22):
    """Windows of the generated corpus (block 32); the first ``n_windows`` for training."""
    if "d" not in _DATA:
        _DATA["d"] = build_datasets(generate_stories(40, seed=0), block_size=32, seed=0)
    train_ds, val_ds, tok = _DATA["d"]
    return Subset(train_ds, range(n_windows)), val_ds, tok


def tiny_model(vocab_size: int, dropout: float = 0.0, d_model: int = 32, seed: int = 0):
    from storyopt_lib.model import ModelConfig, StorytellerModel

    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=vocab_size, block_size=32, d_model=d_model, n_head=2, n_layer=1, dropout=dropout
    )
    return StorytellerModel(cfg)


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"accum_steps": 0}, "accum_steps=0"),
        ({"grad_clip": 0.0}, "grad_clip=0.0"),
        ({"grad_clip": -1.0}, "grad_clip=-1.0"),
        ({"max_steps": 0}, "max_steps=0"),
        ({"patience": -1}, "patience=-1"),
        ({"precision": "fp8"}, "precision='fp8'"),
        ({"device": "not-a-device"}, "device='not-a-device'"),
        ({"eval_every": -5}, "eval_every=-5"),
    ],
)
def test_config_rejects_bad_input(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        TrainConfig(**kwargs)


def test_precision_the_device_cannot_run():
    with pytest.raises(ValueError, match="precision='fp16'"):
        resolve_precision("fp16", torch.device("meta"))
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_fails_before_training():
    train_ds, _, tok = tiny_data()
    model = tiny_model(tok.vocab_size)
    before = params(model)
    with pytest.raises(ValueError, match="device='cuda'"):
        train(model, make_loader(train_ds, 4), None, TrainConfig(max_steps=1, device="cuda"))
    assert max_diff(before, params(model)) == 0.0


def test_unwritable_checkpoint_dir_fails_before_training(tmp_path):
    train_ds, _, tok = tiny_data()
    model = tiny_model(tok.vocab_size)
    before = params(model)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cfg = TrainConfig(max_steps=1, device="cpu", checkpoint_dir=blocker / "ckpt")
    with pytest.raises(ValueError, match="checkpoint_dir="):
        train(model, make_loader(train_ds, 4), None, cfg)
    assert max_diff(before, params(model)) == 0.0


def test_resume_with_other_model_shape_names_parameter(tmp_path):
    train_ds, _, tok = tiny_data()
    cfg = TrainConfig(max_steps=1, device="cpu", checkpoint_dir=tmp_path)
    train(tiny_model(tok.vocab_size), make_loader(train_ds, 4), None, cfg)
    wider = tiny_model(tok.vocab_size, d_model=48)
    with pytest.raises(CheckpointError, match=r"parameter '[\w.]+' has shape .*\(.*32.*\).*48"):
        train(wider, make_loader(train_ds, 4), None, cfg, resume_from=tmp_path / "last.pt")


# ---- accumulation -------------------------------------------------------------------------


def test_accumulation_equals_big_batch_including_final_partial_group():
    # 22 windows: big batches of 16 and 6; micro-batches 4,4,4,4 | 4,2 (a partial group).
    train_ds, _, tok = tiny_data(22)
    common = dict(max_steps=2, optimizer="sgd", lr=0.5, weight_decay=0.0, device="cpu")
    big = tiny_model(tok.vocab_size)
    h_big = train(big, make_loader(train_ds, 16, shuffle=False), None, TrainConfig(**common))
    small = tiny_model(tok.vocab_size)
    cfg = TrainConfig(accum_steps=4, **common)
    h_small = train(small, make_loader(train_ds, 4, shuffle=False), None, cfg)
    assert max_diff(params(big), params(small)) < 1e-6
    assert h_big.loss == pytest.approx(h_small.loss, rel=1e-6)  # float32 rounding of ~6.0
    assert h_big.grad_norm == pytest.approx(h_small.grad_norm, rel=1e-5)


# ---- fp16 skips and non-finite losses -----------------------------------------------------


def _inject_inf(model, at_call: int) -> None:
    """Make the gradient of one parameter infinite on backward call number ``at_call`` (1-based)."""
    calls = {"n": 0}
    p = next(model.parameters())

    def hook(g):
        calls["n"] += 1
        return g * float("inf") if calls["n"] == at_call else g

    p.register_hook(hook)


def test_fp16_overflow_skips_exactly_that_update_without_warning():
    train_ds, _, tok = tiny_data()
    model = tiny_model(tok.vocab_size)
    _inject_inf(model, at_call=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = as_lambda_lr(optimizer, LinearWarmup(100))
    cfg = TrainConfig(max_steps=6, precision="fp16", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = train(
            model, make_loader(train_ds, 4), None, cfg, optimizer=optimizer, scheduler=scheduler
        )
    assert h.skipped == [False, False, True, False, False, False]
    assert h.loss_scale[2] == h.loss_scale[1] / 2
    assert h.lr[3] == h.lr[2] and h.lr[2] > h.lr[1] and h.lr[4] > h.lr[3]
    assert scheduler.last_epoch == 5  # 6 steps, 5 real updates
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fp16_first_step_skipped_emits_no_scheduler_warning():
    train_ds, _, tok = tiny_data()
    model = tiny_model(tok.vocab_size)
    _inject_inf(model, at_call=1)
    cfg = TrainConfig(max_steps=2, precision="fp16", device="cpu", schedule=LinearWarmup(10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = train(model, make_loader(train_ds, 4), None, cfg)
    assert h.skipped == [True, False]
    assert h.lr[0] == h.lr[1]


def test_fp32_non_finite_loss_raises_naming_step_and_writes_no_bad_checkpoint(tmp_path):
    train_ds, _, tok = tiny_data()
    model = tiny_model(tok.vocab_size)
    _inject_inf(model, at_call=3)
    cfg = TrainConfig(max_steps=6, device="cpu", checkpoint_dir=tmp_path, checkpoint_every=1)
    with pytest.raises(FloatingPointError, match="step 3"):
        train(model, make_loader(train_ds, 4), None, cfg)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


# ---- early stopping -----------------------------------------------------------------------


def test_early_stopping_on_crafted_curve_restores_best(monkeypatch):
    curve = iter([3.0, 2.0, 1.5, 1.6, 1.495, 1.7, 1.0, 1.0])
    seen: list[dict] = []

    def fake_evaluate(model, loader, max_batches=None, device=None, precision="fp32"):
        seen.append(params(model))
        return next(curve)

    monkeypatch.setattr(training, "evaluate", fake_evaluate)
    train_ds, val_ds, tok = tiny_data()
    model = tiny_model(tok.vocab_size)
    cfg = TrainConfig(max_steps=20, device="cpu", eval_every=1, patience=2, min_delta=0.01)
    h = train(model, make_loader(train_ds, 4), make_loader(val_ds, 4), cfg)
    # eval 4: 1.6 (1 bad), eval 5: 1.495 is not below 1.5 - 0.01 (2 bad): stop at step 5.
    assert h.stop_reason == "early_stopping"
    assert h.steps == [1, 2, 3, 4, 5] and h.eval_steps == [1, 2, 3, 4, 5]
    assert h.best_step == 3 and h.best_val_loss == 1.5
    assert max_diff(params(model), seen[2]) == 0.0
    assert max_diff(seen[4], seen[2]) > 0.0  # training did move on after the best step


def test_evaluate_is_token_weighted_mean_and_keeps_mode():
    _, val_ds, tok = tiny_data()
    model = tiny_model(tok.vocab_size, dropout=0.1)
    model.train()
    full = evaluate(model, make_loader(val_ds, len(val_ds), shuffle=False))
    batched = evaluate(model, make_loader(val_ds, 5, shuffle=False))
    assert model.training
    assert batched == pytest.approx(full, rel=1e-5)


# ---- exact resume -------------------------------------------------------------------------


def _resume_setup(precision: str, max_steps: int, checkpoint_dir=None):
    train_ds, _, tok = tiny_data(22)
    model = tiny_model(tok.vocab_size, dropout=0.1)
    loader = make_loader(train_ds, 4, shuffle=True, seed=3)
    cfg = TrainConfig(
        max_steps=max_steps, lr=3e-3, precision=precision, device="cpu", accum_steps=2,
        schedule=WarmupCosine(2, 8), checkpoint_dir=checkpoint_dir, seed=5,
    )  # fmt: skip
    return model, loader, cfg


def resume_main(precision: str, ckpt_dir: str, out_dir: str) -> None:
    """Run in a fresh process: resume from ``ckpt_dir/last.pt`` to 8 steps; save to out_dir."""
    warnings.simplefilter("error")
    model, loader, cfg = _resume_setup(precision, 8, out_dir)
    h = train(model, loader, None, cfg, resume_from=Path(ckpt_dir) / "last.pt")
    h.save(Path(out_dir) / "history.json")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_exact_resume_in_a_fresh_process(tmp_path, precision):
    # 22 windows, batch 4, accum 2: 3 steps per epoch; the checkpoint after 4 is mid-epoch.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, loader, cfg = _resume_setup(precision, 8)
        h_full = train(model, loader, None, cfg)
        m1, l1, c1 = _resume_setup(precision, 4, tmp_path / "a")
        h_first = train(m1, l1, None, c1)
    assert h_first.loss == h_full.loss[:4]
    code = (
        "from tests.test_training import resume_main; "
        f"resume_main({precision!r}, {str(tmp_path / 'a')!r}, {str(tmp_path / 'b')!r})"
    )
    env = {**os.environ, "STORYOPT_PROGRESS": "0"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
    h_resumed = History.load(tmp_path / "b" / "history.json")
    assert h_resumed.steps == list(range(1, 9))
    assert h_resumed.loss == h_full.loss  # bit-identical
    assert h_resumed.lr == h_full.lr
    final = load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(final[k], v) for k, v in model.state_dict().items())


# ---- history, progress --------------------------------------------------------------------


def test_history_json_roundtrip_and_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    train_ds, val_ds, tok = tiny_data()
    cfg = TrainConfig(max_steps=4, device="cpu", eval_every=2)
    h = train(tiny_model(tok.vocab_size), make_loader(train_ds, 4), make_loader(val_ds, 4), cfg)
    assert len(h.loss) == len(h.lr) == len(h.grad_norm) == len(h.tokens_per_s) == 4
    assert h.loss_scale == [None] * 4 and h.stop_reason == "max_steps"
    h2 = History.load(h.save(tmp_path / "h.json"))
    assert h2 == h
    assert json.loads((tmp_path / "h.json").read_text())["eval_steps"] == [2, 4]
    axes = h.plot()
    assert axes[0].get_xlabel() == "step" and axes[1].get_ylabel() == "learning rate"


def test_no_progress_bar_outside_a_terminal(monkeypatch):
    monkeypatch.setenv("STORYOPT_PROGRESS", "0")
    assert not training._want_progress(None)
    monkeypatch.setenv("STORYOPT_PROGRESS", "1")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert not training._want_progress(None)
