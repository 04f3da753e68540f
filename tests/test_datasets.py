"""scene/data/datasets.py: the CLIs load every dataset format through one registry."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scene.data import datasets  # noqa: E402
from scene.data.subject import Subject  # noqa: E402
from utils.errors import MissingFileError  # noqa: E402


def test_nersemble_folders_go_to_the_nersemble_reader(tiny):
    assert datasets.dataset_format(tiny["subject"]).name == "nersemble"
    subject = datasets.load_subject(tiny["subject"], resolution_scale=0.5)
    assert isinstance(subject, Subject) and subject.frames["train"]
    assert subject.frames["train"][0].width == 24  # the loader's keyword arguments pass through
    sequence = datasets.load_sequence(tiny["subject"])
    assert len(sequence.frames["all"]) == len(subject.all_frames())


def test_a_registered_format_is_used_for_its_folders(tiny, tmp_path, monkeypatch):
    """A second format plugs in with register_format and is picked for the folders it recognises."""
    monkeypatch.setattr(datasets, "FORMATS", dict(datasets.FORMATS))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "my_format.txt").write_text("points at a NeRSemble subject\n" + str(tiny["subject"]))
    calls = []

    def load(path, **kwargs):  # a format whose files name a NeRSemble subject to read
        calls.append(kwargs)
        return datasets.FORMATS["nersemble"].load_subject(Path(path).joinpath("my_format.txt").read_text().split("\n")[1])

    datasets.register_format(datasets.DatasetFormat("mine", lambda p: (p / "my_format.txt").is_file(), load, load))
    assert datasets.dataset_format(mine).name == "mine"
    assert datasets.dataset_format(tiny["subject"]).name == "nersemble"
    subject = datasets.load_subject(mine, resolution_scale=1.0)
    assert calls == [{"resolution_scale": 1.0}] and subject.frames["train"]


def test_an_unrecognised_folder_gets_the_default_readers_error(tmp_path):
    with pytest.raises(MissingFileError, match="transforms"):
        datasets.load_subject(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="transforms"):
        datasets.load_sequence(tmp_path / "empty")


def test_progress_reaches_loaders_that_take_it(tiny, tmp_path, monkeypatch, capsys):
    """``progress`` goes to the NeRSemble loader (bars on stderr); a format whose loader has no
    such argument is called without it."""
    datasets.load_subject(tiny["subject"], progress=True)
    assert "reading transforms_train.json" in capsys.readouterr().err
    monkeypatch.setattr(datasets, "FORMATS", dict(datasets.FORMATS))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "my_format.txt").write_text("x")
    calls = []

    def load(path, resolution_scale=1.0):  # an older loader: no progress argument
        calls.append(resolution_scale)
        return datasets.FORMATS["nersemble"].load_subject(tiny["subject"])

    datasets.register_format(datasets.DatasetFormat("mine", lambda p: (p / "my_format.txt").is_file(), load, load))
    assert datasets.load_subject(mine, resolution_scale=0.5, progress=True).frames["train"]
    assert calls == [0.5]
