import json
import time

import pandas as pd
import pytest
import torch

from noisekd.__main__ import main
from noisekd.checkpoints import save_model
from noisekd.data import Augmentation, ImageData
from noisekd.evaluate import ROW_COLUMNS, accuracy, corruption_rows, finish_rows, read_rows_settings, write_rows
from noisekd.lineage import settings_hash
from noisekd.methods import MethodParams, get_method
from noisekd.models import WRNSpec, build_model
from noisekd.provenance import git_commit, provenance
from noisekd.settings import TrainConfig
from noisekd.sources import load_digits
from noisekd.train import fit


class LookupModel(torch.nn.Module):
    """Predicts the class stored in the first pixel: lets tests fix predictions by hand."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        cls = (x[:, 0, 0, 0] * 255).round().long()
        return torch.nn.functional.one_hot(cls, 10).float() + 0 * self.dummy


def _data(first_pixels, labels):
    images = torch.zeros(len(labels), 3, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor(first_pixels, dtype=torch.uint8)
    return ImageData(images, torch.tensor(labels), tuple(str(i) for i in range(10)))


def test_accuracy_conditional_accuracy_and_mca_by_hand():
    model = LookupModel()
    clean = _data([0, 1, 2, 9], [0, 1, 2, 3])  # 3 of 4 right; the last is wrong on the clean image
    a = _data([0, 5, 2, 3], [0, 1, 2, 3])  # right: 0, 2, 3 -> acc 3/4; among clean-correct {0,1,2}: 2/3
    b = _data([9, 9, 9, 3], [0, 1, 2, 3])  # right: 3 only -> acc 1/4; conditional 0/3
    assert accuracy(model, clean) == 0.75
    rows = corruption_rows(model, clean, [("fog", 1, a), ("fog", 2, b)])
    by = {(r["metric"], r.get("severity")): r["value"] for r in rows}
    assert by[("corruption_acc", 1)] == 0.75 and by[("corruption_acc", 2)] == 0.25
    assert by[("corruption_cond_acc", 1)] == pytest.approx(2 / 3) and by[("corruption_cond_acc", 2)] == 0.0
    assert by[("mca", None)] == 0.5
    assert by[("mca_cond", None)] == pytest.approx(1 / 3)


def test_rows_are_tidy_and_carry_provenance(tmp_path):
    settings = {"data": {"source": "digits", "holdout": None}, "student": {"train": {"epochs": 3}}, "seed": 1}
    rows = finish_rows([{"metric": "test_acc", "value": 0.5}], {"run_id": "r", "seed": 1, "params": {"sigma": 0.1}},
                       provenance(settings, "cpu"))
    write_rows(rows, tmp_path / "rows.parquet", settings=settings)
    frame = pd.read_parquet(tmp_path / "rows.parquet")
    assert list(frame.columns) == list(ROW_COLUMNS)
    assert frame.loc[0, "params"] == '{"sigma": 0.1}' and frame.loc[0, "git_commit"] == git_commit()
    # The file carries the settings its rows' hash names; the hash does not depend on key order.
    assert read_rows_settings(tmp_path / "rows.parquet") == settings
    reordered = {"seed": 1, "student": {"train": {"epochs": 3}}, "data": {"holdout": None, "source": "digits"}}
    assert frame.loc[0, "settings_hash"] == settings_hash(settings) == settings_hash(reordered)
    assert settings_hash({**settings, "seed": 2}) != settings_hash(settings)
    write_rows(rows, tmp_path / "bare.parquet")
    assert read_rows_settings(tmp_path / "bare.parquet") is None
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind


@pytest.mark.slow
def test_command_line_evaluates_a_digits_student(tmp_path, capsys):
    train = load_digits("train", size=16)
    x = train.images.float() / 255
    spec = WRNSpec(10, 1, mean=tuple(x.mean((0, 2, 3)).tolist()), std=tuple(x.std((0, 2, 3)).tolist()))
    student = build_model(spec, 0)
    result = fit(student, train, TrainConfig(epochs=2, milestones=(1,), batch_size=64), get_method("ga"),
                 MethodParams(sigma=0.1), augmentation=Augmentation(2, False), device="cpu", log=lambda s: None)
    ckpt = tmp_path / "student.pt"
    save_model(ckpt, student, summary=json.dumps(result.summary))  # as the workflow saves it
    out = tmp_path / "rows.parquet"
    # The checkpoint says it was trained at 16x16: another size is refused, none is taken from it.
    assert main(["evaluate", str(ckpt), "--dataset", "digits", "--size", "12", "--out", str(out)]) == 1
    assert "student.pt was trained on 16x16 images, the digits test set here is 12x12 (--size)" in capsys.readouterr().err
    assert not out.exists()
    start = time.perf_counter()
    assert main(["evaluate", str(ckpt), "--dataset", "digits", "--out", str(out),
                 "--pgd-steps", "20", "--restarts", "5"]) == 0
    elapsed = time.perf_counter() - start
    frame = pd.read_parquet(out)
    counts = frame.metric.value_counts()
    assert counts["corruption_acc"] == 95 and counts["corruption_cond_acc"] == 95
    assert {"test_acc", "ood_acc", "mca", "robust_acc_worst_of_restarts", "robust_acc_final_min_over_runs"} <= set(counts.index)
    pgd = frame[frame.metric.str.startswith("robust")]
    assert (pgd.steps == 20).all() and (pgd.restarts == 5).all()
    clean = frame.loc[frame.metric == "test_acc", "value"].item()
    worst = frame.loc[frame.metric == "robust_acc_worst_of_restarts", "value"].item()
    assert worst <= frame.loc[frame.metric == "robust_acc_final_min_over_runs", "value"].item() <= clean
    print(f"clean + OOD + 95 corruption cells + PGD-20 x 5 restarts in {elapsed:.1f}s")


def test_command_line_names_a_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(bad), "--dataset", "digits", "--out", str(tmp_path / "x.parquet")]) == 1
    assert "bad.pt" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_git_commit_marks_new_code_as_dirty(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "noisekd").mkdir()
    (tmp_path / "noisekd" / "a.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit.__wrapped__(str(tmp_path)) == sha
    (tmp_path / "my_config.yaml").write_text("seeds: {}\n")  # a config beside the code: not code
    assert git_commit.__wrapped__(str(tmp_path)) == sha
    (tmp_path / "noisekd" / "b.py").write_text("y = 2\n")  # a new module a run may import
    assert git_commit.__wrapped__(str(tmp_path)) == sha + "+dirty"
    (tmp_path / "noisekd" / "b.py").unlink()
    (tmp_path / "noisekd" / "a.py").write_text("x = 2\n")
    assert git_commit.__wrapped__(str(tmp_path)) == sha + "+dirty"


def _checkpoint_with_spec(path, **changes):
    """A model file as `save_model` writes it, its recorded architecture then edited by hand."""
    save_model(path, build_model(WRNSpec(10, 1), 0))
    obj = torch.load(path, weights_only=True)
    obj["spec"].update(changes)
    torch.save(obj, path)
    return path


@pytest.mark.reliability
def test_command_line_names_an_invalid_architecture_in_one_line(tmp_path):
    """WRN depth 11 is not 6n+4: one line naming the checkpoint and the field, not WideResNet's traceback."""
    import subprocess
    import sys

    ckpt = _checkpoint_with_spec(tmp_path / "deep11.pt", depth=11)
    out = tmp_path / "rows.parquet"
    proc = subprocess.run([sys.executable, "-m", "noisekd", "evaluate", str(ckpt), "--dataset", "digits",
                           "--out", str(out), "--device", "cpu"], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == (f"error: checkpoint {ckpt} records an invalid architecture (WRN-11-1): "
                           "WRN depth must be 6n+4 with n >= 1, got 11\n")
    assert not out.exists()


@pytest.mark.reliability
@pytest.mark.parametrize("changes, named", [
    ({"width": 0}, "spec.width is 0, expected a positive integer"),
    ({"depth": 16.0}, "spec.depth is 16.0, expected a positive integer"),
    ({"num_classes": -1}, "spec.num_classes is -1"),
    ({"dropout": 1.5}, "dropout rate must be in [0, 1), got 1.5"),
    ({"mean": [0.5, 0.5]}, "mean and std need one value per input channel (3), got 2 and 3"),
    ({"std": ["x", 1, 1]}, "spec.mean / spec.std must be numbers"),
])
def test_invalid_recorded_architectures_are_named(tmp_path, changes, named):
    from noisekd.checkpoints import load_model
    from noisekd.errors import NoiseKDError

    ckpt = _checkpoint_with_spec(tmp_path / "bad.pt", **changes)
    with pytest.raises(NoiseKDError) as err:
        load_model(ckpt)
    msg = str(err.value)
    assert msg.startswith(f"checkpoint {ckpt} records an invalid architecture") and named in msg and "\n" not in msg


class _RunsACommand:
    """Unpickling this would run a shell command (here: create a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.reliability
@pytest.mark.parametrize("fmt", ["torch.save", "pickle-2", "pickle-4"])
def test_refused_pickle_names_the_global(tmp_path, capsys, fmt):
    """torch's weights-only refusal is reduced to one line naming the global (os.system is posix.system)."""
    import os
    import pickle

    from noisekd.checkpoints import load_model
    from noisekd.errors import NoiseKDError

    marker = tmp_path / "ran"
    payload = {"format": "noisekd-model", "spec": {}, "state_dict": {}, "x": _RunsACommand(marker)}
    ckpt = tmp_path / "evil.pt"
    if fmt == "torch.save":
        torch.save(payload, ckpt)  # the zip format, as a tampered model file would be
    else:
        ckpt.write_bytes(pickle.dumps(payload, protocol=int(fmt[-1])))
    system = f"{os.system.__module__}.system"
    with pytest.raises(NoiseKDError) as err:
        load_model(ckpt)
    msg = str(err.value)
    assert msg.startswith(f"checkpoint {ckpt} refused by the weights-only loader: ") and "\n" not in msg
    assert system in msg and "PyTorch 2.6" not in msg and "weights_only` set to `False" not in msg
    if fmt != "pickle-4":  # protocol 4 stops torch's legacy reader at its first opcode; we name the import ourselves
        assert f"it holds the global {system} (module {system.split('.')[0]} is blocked" in msg
    assert main(["evaluate", str(ckpt), "--dataset", "digits", "--out", str(tmp_path / "x.parquet")]) == 1
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and system in err_text
    assert not marker.exists()  # refused, never run
