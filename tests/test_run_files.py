"""Output locations and run directories (issue 19, root cause 4): an output under a file or in a directory that
cannot be written is refused before any work; a killed atomic write leaves only a hidden temp file, which the next
start of the run removes."""
import os

import numpy as np
import pytest

from common import checks
from common.errors import InputError
from common.io import atomic_write, is_partial, remove_partials, write_json
from common.rundir import RunDir


def test_out_dir_that_is_or_lies_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="exists and is not a directory"):
        checks.check_out_dir(str(tmp_path / "afile"))
    with pytest.raises(InputError, match="is a file, not a directory"):
        checks.check_out_dir(str(tmp_path / "afile" / "run" / "deeper"))
    with pytest.raises(InputError, match="is a file, not a directory"):
        checks.check_writable(str(tmp_path / "afile" / "x.json"), "--json")
    with pytest.raises(InputError, match="is a directory"):
        checks.check_writable(str(tmp_path), "--json")
    checks.check_out_dir(str(tmp_path / "new" / "run"))  # missing directories are fine: created later
    with pytest.raises(InputError, match="exists and is not a directory"):
        RunDir(str(tmp_path / "afile"), {}).check()


def test_unwritable_directory_is_refused(tmp_path, monkeypatch):
    # The sandbox runs as root, where permission bits do not bind: os.access is what the check consults.
    target = str(tmp_path / "ro")
    os.mkdir(target)
    monkeypatch.setattr(checks.os, "access", lambda p, mode: os.path.abspath(p) != target)
    with pytest.raises(InputError, match="is not writable"):
        checks.check_out_dir(os.path.join(target, "run"), "--out_dir")
    with pytest.raises(InputError, match="--output=.*is not writable"):
        checks.check_writable(os.path.join(target, "m.tflite"), "--output")


def test_killed_atomic_write_leaves_a_partial_that_start_removes(tmp_path):
    run = tmp_path / "run"

    def killed(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(run / "weights.npz"), killed)
    assert not os.listdir(run)  # an exception cleans up; only a kill leaves the temp file
    # What a SIGKILL (no cleanup runs) leaves: temp files named as atomic_write names them.
    import tempfile
    fd, orphan = tempfile.mkstemp(prefix=".weights.npz.", suffix=".partial.npz", dir=run)
    os.close(fd)
    nested = run / "checkpoints"
    nested.mkdir()
    fd, orphan2 = tempfile.mkstemp(prefix=".state.json.", suffix=".partial.json", dir=nested)
    os.close(fd)
    keep = run / ".hidden_user_file"
    keep.write_text("mine")
    assert is_partial(os.path.basename(orphan)) and is_partial(os.path.basename(orphan2))
    rd = RunDir(str(run), {"a": 1})
    rd.start()
    assert not os.path.exists(orphan) and not os.path.exists(orphan2)
    assert keep.exists() and (run / "settings.json").exists()
    assert remove_partials(str(run)) == []


def test_atomic_write_temp_names_are_recognised(tmp_path, monkeypatch):
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_json(str(tmp_path / "a.json"), {"x": 1})
    atomic_write(str(tmp_path / "w.npz"), lambda f: np.savez(f, a=np.zeros(2)))
    assert len(seen) == 2 and all(is_partial(n) for n in seen), seen
    assert sorted(os.listdir(tmp_path)) == ["a.json", "w.npz"]
    assert set(np.load(tmp_path / "w.npz").files) == {"a"}


def test_progress_is_drawn_on_a_terminal_only(monkeypatch):
    """Redirected output (a log file, CI) gets no tqdm carriage returns and no Keras escape codes: the bar is
    disabled and Keras prints one line per epoch; ``--noprogress`` silences both everywhere."""
    import io

    from common.io import keras_verbose, progress_bar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, drawn in ((io.StringIO(), False), (Tty(), True)):
        monkeypatch.setattr("sys.stderr", stream)
        monkeypatch.setattr("sys.stdout", stream)
        bar = progress_bar(True, 3, "x")
        bar.update()
        bar.close()
        assert ("\r" in stream.getvalue()) is drawn
        assert keras_verbose(True) == (1 if drawn else 2) and keras_verbose(False) == 2
        assert not hasattr(progress_bar(False, 3, "x"), "disable")


def test_a_run_of_another_command_is_named_as_such(tmp_path):
    """Two commands sharing a settings file name (the searches' search_settings.json): the second is told the
    directory holds another command's run, not that its own flags differ."""
    from common.rundir import SettingsMismatch
    run = tmp_path / "run"
    RunDir(str(run), {"candidates": [3, 5], "lam": 2.0}, settings_file="search_settings.json").start()
    with pytest.raises(SettingsMismatch, match=r"holds a run of another command \(its settings have candidates, which"):
        RunDir(str(run), {"kernels": [1, 3], "lam": 2.0}, settings_file="search_settings.json").check()
    with pytest.raises(SettingsMismatch, match=r"other settings \(lam\)"):
        RunDir(str(run), {"candidates": [3, 5], "lam": 1.0}, settings_file="search_settings.json").check()


def test_output_paths_are_checked_against_inputs_markers_and_lengths(tmp_path):
    from common.checks import ConfigError, check_not_run_file, check_writable
    spec = tmp_path / "spec.json"
    spec.write_text("{}")
    with pytest.raises(ConfigError, match="is the --model input"):
        check_writable(str(tmp_path / "." / "spec.json"), "--json", model=str(spec))
    os.symlink(spec, tmp_path / "link.json")
    with pytest.raises(ConfigError, match="is the --model input"):
        check_writable(str(tmp_path / "link.json"), "--json", model=str(spec))
    (tmp_path / "train_settings.json").write_text("{}")
    with pytest.raises(ConfigError, match="settings file of a run of recipes.train"):
        check_writable(str(tmp_path / "train_settings.json"), "--json")
    check_writable(str(tmp_path / "train_settings.json"), "--json", marker_ok=True)
    os.symlink(tmp_path / "train_settings.json", tmp_path / "innocent.json")  # written through: judged by its target
    with pytest.raises(ConfigError, match="settings file of a run of recipes.train"):
        check_writable(str(tmp_path / "innocent.json"), "--json")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    os.symlink(tmp_path / "run" / "summary.json", tmp_path / "spec_out.json")
    with pytest.raises(ConfigError, match="is the run's own summary.json"):
        check_not_run_file(str(tmp_path / "spec_out.json"), "--output", str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="at most 232 fit"):
        check_writable(str(tmp_path / ("x" * 228 + ".json")), "--json")
    check_writable(str(tmp_path / ("x" * 227 + ".json")), "--json")  # its temp ".….XXXXXXXX.partial.json": 255 bytes
    import tempfile
    fd, tmp = tempfile.mkstemp(prefix="." + "x" * 227 + ".json.", suffix=".partial.json", dir=tmp_path)
    os.close(fd)
    assert len(os.path.basename(tmp)) == 255  # what atomic_write makes of that name: exactly the limit
    with pytest.raises(ConfigError, match="the run's own derived_init.npz"):
        check_not_run_file(str(tmp_path / "derived_init.npz"), "--output", str(tmp_path))
    check_not_run_file(str(tmp_path / "derived.json"), "--output", str(tmp_path))


def test_write_json_writes_null_for_non_finite_floats(tmp_path):
    """JSON has no NaN/Infinity: every non-finite float (also numpy's, nested anywhere) is written as null, so the
    file parses with a strict reader."""
    import json
    path = tmp_path / "card.json"
    write_json(str(path), {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5, (np.float32("nan"),)],
                           "c": {"d": np.float64("inf"), "e": 2, "f": True, "g": None, "h": "NaN"}})
    text = path.read_text()
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text

    def refuse(token):
        raise AssertionError(f"invalid JSON token {token}")
    data = json.loads(text, parse_constant=refuse)
    assert data == {"a": None, "b": [None, None, 1.5, [None]], "c": {"d": None, "e": 2, "f": True, "g": None,
                                                                      "h": "NaN"}}


def test_weights_files_never_hold_non_finite_values(tmp_path):
    """`models.weights.write_npz` (every weights file a run writes) refuses NaN/inf arrays with `Diverged`, an
    InputError naming the array, and writes nothing."""
    from common.errors import Diverged
    from models.weights import write_npz
    with pytest.raises(Diverged, match="weight b/kernel holds 1 NaN/inf value"):
        write_npz(str(tmp_path / "w.npz"), {"a/kernel": np.ones(3, "float32"),
                                             "b/kernel": np.array([1.0, np.nan], "float32")}, hint="lower --lr")
    assert not os.listdir(tmp_path)
    write_npz(str(tmp_path / "w.npz"), {"a/kernel": np.ones(3, "float32"), "n": np.arange(3)})
    assert os.listdir(tmp_path) == ["w.npz"]


def test_resumable_loop_stops_on_a_non_finite_loss_or_variable(tmp_path):
    """Every custom loop (meta-kernel, FGNAS and SPOS searches) checks each step's loss and, before the epoch's
    checkpoint, every variable: NaN/inf is one `Diverged` line naming what and when, and nothing is saved."""
    import tensorflow as tf

    from common.epoch_state import EpochState, ResumableLoop
    from common.errors import Diverged

    class Loop(ResumableLoop):
        def __init__(self):
            self.epoch = tf.Variable(0, dtype=tf.int64)
            self.w = tf.Variable([1.0, 2.0])
            self.history = []
            self._state = EpochState(str(tmp_path / "ckpt"), self.epoch, w=self.w)
            self.divergence = "lower --lr (it is 1e+03)"

    loop = Loop()
    loop.check_loss(0.5, 1, 1)
    with pytest.raises(Diverged, match=r"the loss became NaN at epoch 1 step 3: lower --lr \(it is 1e\+03\)"):
        loop.check_loss(float("nan"), 1, 3)
    with pytest.raises(Diverged, match="became infinite"):
        loop.check_loss(np.float32("inf"), 2, 1, "the cost loss")
    loop.finish_epoch({"epoch": 1}, 1)
    assert loop.history and os.path.exists(tmp_path / "ckpt" / "history.json")
    loop.w.assign([1.0, float("nan")])
    with pytest.raises(Diverged, match="w became NaN in epoch 2: lower --lr"):
        loop.finish_epoch({"epoch": 2}, 2)
    assert len(loop.history) == 1  # not recorded, not saved
