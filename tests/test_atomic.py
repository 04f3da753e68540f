"""utils/atomic.py: a write replaces the file whole or not at all."""
import pytest

from utils.atomic import atomic_write, write_text_atomic


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    with atomic_write(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert path.read_text() == "two" and (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.json", "b.bin", "sub"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
