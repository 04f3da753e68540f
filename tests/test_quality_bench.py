"""bench/quality.py's bookkeeping (its trainings run for hours: their figures are in
docs/BENCHMARKS.md): a finished run's row is kept beside its model with its options and commit,
reused by the next invocation of the same run instead of rendered and scored again, run again
for other options, retrained with ``--fresh``, and the report names the commits its rows come
from."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import quality  # noqa: E402


def test_a_finished_run_is_kept_and_reused_until_fresh(tmp_path, monkeypatch):
    calls = []

    def fake_train_render_score(method, model, subject, flame, protocol, threads, **kw):
        calls.append((method, model, kw["fresh"]))
        model.mkdir(parents=True, exist_ok=True)
        return {"method": method, "results": {"val": {"PSNR": 30.0 + len(calls)}}}

    monkeypatch.setattr(quality, "train_render_score", fake_train_render_score)
    monkeypatch.setattr(quality, "REPO", tmp_path)
    args = argparse.Namespace(out="bench", fresh=False, iterations=None, train_args=[], metrics="standard",
                              fps_frames=0)
    first = quality.train_and_score("npga", 1, "paper", args, Path("s"), Path("f"), 1)
    model = tmp_path / "bench" / "paper" / "seed1" / "npga"
    kept = json.loads((model / quality.ROW_FILE).read_text())
    assert kept == first and kept["seed"] == 1 and kept["protocol"] == "paper" and "commit" in kept

    assert kept["spec"]["train"][:2] == ["--protocol", "paper"] and "configs/npga.yaml" in kept["spec"]["train"]

    again = quality.train_and_score("npga", 1, "paper", args, Path("s"), Path("f"), 1)
    assert again == first and len(calls) == 1  # reused: nothing trained, rendered or scored again

    args.iterations = 500  # another schedule: the run continues and is scored again
    longer = quality.train_and_score("npga", 1, "paper", args, Path("s"), Path("f"), 1)
    assert len(calls) == 2 and calls[-1][2] is False and longer["results"]["val"]["PSNR"] == 32.0
    assert longer["spec"]["train"][-2:] == ["--iterations", "500"]

    args.fresh = True
    fresh = quality.train_and_score("npga", 1, "paper", args, Path("s"), Path("f"), 1)
    assert len(calls) == 3 and calls[-1][2] is True and fresh["results"]["val"]["PSNR"] == 33.0
    assert json.loads((model / quality.ROW_FILE).read_text())["results"]["val"]["PSNR"] == 33.0


def test_the_report_names_the_commits_of_its_rows():
    line = quality.commits_line([{"commit": "a" * 40}, {"commit": "a" * 40}, {"commit": "b" * 40 + "+dirty"},
                                 {"commit": None}])
    assert line == f"Rows trained at commit {'a' * 12} (2), {'b' * 12} (1), unknown (1)."


def test_a_failed_step_names_its_cause_from_the_end_of_its_log(tmp_path):
    """A refused --resume (or any failure) of a bench step says why, not only where its log is."""
    import pytest

    log = tmp_path / "logs" / "train.log"
    script = "import sys; print('[train] starting'); sys.exit('error: the run was trained with other options')"
    with pytest.raises(SystemExit) as exc:
        quality.run([sys.executable, "-c", script], log=log)
    message = str(exc.value)
    assert message.startswith("failed (1): ") and str(log) in message
    assert message.endswith("error: the run was trained with other options")
