"""Tests of storyopt_lib.checkpoint: round trip, atomic writes, refusing unsafe or broken files."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from storyopt_lib import checkpoint as ck
from storyopt_lib.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _setup(width: int = 8):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.LayerNorm(width))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    scaler = torch.amp.GradScaler("cpu")
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched, scaler


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched, scaler = _setup()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = save_checkpoint(
        tmp_path / "c.pt", model, opt, sched, scaler, step=7, best_val_loss=1.25,
        config={"lr": 1e-2}, data_position=(2, 5), extra={"note": "x"},
    )  # fmt: skip
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    m2, o2, s2, sc2 = _setup()
    with torch.no_grad():
        for p in m2.parameters():
            p.zero_()
    ckpt = load_checkpoint(path, m2, o2, s2, sc2, restore_rng=True)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    assert ckpt["step"] == 7 and ckpt["best_val_loss"] == 1.25
    assert ckpt["data_position"] == [2, 5] and ckpt["extra"] == {"note": "x"}
    for a, b in zip(model.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert o2.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    assert s2.last_epoch == sched.last_epoch and sc2.get_scale() == scaler.get_scale()


def test_write_killed_part_way_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, _, _ = _setup()
    path = save_checkpoint(tmp_path / "last.pt", model, opt, step=1)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half-written...
        raise KeyboardInterrupt("killed while writing")  # ...then the process dies

    monkeypatch.setattr(ck.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, opt, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_pickled_object_file_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ck.FORMAT, "version": ck.VERSION, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt"):
        load_checkpoint(path)


def test_truncated_and_foreign_files_name_the_file(tmp_path):
    model, opt, _, _ = _setup()
    good = save_checkpoint(tmp_path / "good.pt", model, opt)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        load_checkpoint(cut)
    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.txt"):
        load_checkpoint(foreign)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_non_finite_weights_are_never_written(tmp_path):
    model, _, _, _ = _setup()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"0\.weight"):
        save_checkpoint(tmp_path / "bad.pt", model)
    assert not any(tmp_path.iterdir())


def test_other_model_shape_names_first_mismatch(tmp_path):
    model, _, _, _ = _setup(width=8)
    path = save_checkpoint(tmp_path / "c.pt", model)
    wider, _, _, _ = _setup(width=16)
    with pytest.raises(CheckpointError, match=r"'0\.weight' has shape \(8, 4\).*\(16, 4\)"):
        load_checkpoint(path, wider)


def test_unplain_values_are_refused_before_writing(tmp_path):
    model, _, _, _ = _setup()
    with pytest.raises(TypeError, match=r"extra"):
        save_checkpoint(tmp_path / "c.pt", model, extra={"obj": Payload()})
    assert not any(tmp_path.iterdir())
