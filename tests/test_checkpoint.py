"""Checkpoints are written atomically and only the newest K are kept."""
import pytest

from utils.checkpoint import latest_checkpoint, list_checkpoints, write_checkpoint


def test_atomic_write_and_keep_last(tmp_path):
    for it in (10, 20, 30, 40):
        write_checkpoint(tmp_path, it, lambda d: (d / "a.txt").write_text(str(it)), keep=2)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [30, 40]
    it, path = latest_checkpoint(tmp_path)
    assert it == 40 and (path / "a.txt").read_text() == "40"


def test_interrupted_write_leaves_previous_checkpoint(tmp_path):
    write_checkpoint(tmp_path, 1, lambda d: (d / "a.txt").write_text("ok"))

    def crash(folder):
        (folder / "half.txt").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, 2, crash)
    assert [i for i, _ in list_checkpoints(tmp_path)] == [1]  # no half-written iteration 2
    write_checkpoint(tmp_path, 3, lambda d: (d / "a.txt").write_text("ok"))  # cleans the stale .tmp
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
