"""bench/convergence.py's schedule stretching and report (the study itself runs for hours: its
figures are in docs/BENCHMARKS.md): the stretched demo schedule, the mean over seeds, the
differences to GaussianAvatars and the sampler's class sizes, on rows whose values are known."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import convergence  # noqa: E402


def test_schedule_stretches_the_demo_densification_window():
    args = convergence.schedule_args(10_000)
    sets = dict(a.split("=") for a in args[args.index("--set") + 1::2])
    assert args[:2] == ["--iterations", "10000"]
    assert sets["densify.densify_from_iter"] == "2000" and sets["densify.densify_until_iter"] == "8000"
    demo = dict(a.split("=") for a in convergence.schedule_args(2000)[3::2])
    assert demo["densify.densify_from_iter"] == "400" and demo["densify.densify_until_iter"] == "1600"


def row(method, length, seed, full, head, preset="monocular"):
    return {"method": method, "length": length, "seed": seed, "preset": preset,
            "results": {"test": {"PSNR": full, "regions": {"head": {"PSNR": head}}}}}


def test_report_means_differences_and_classes():
    rows = [row("tensorial", 2000, 0, 20.0, 24.0), row("tensorial", 2000, 1, 22.0, 26.0),
            row("gaussian_avatars", 2000, 0, 21.0, 25.5), row("gaussian_avatars", 2000, 1, 22.0, 27.5),
            row("tensorial", 10000, 0, 23.0, 27.0)]
    text = convergence.report(rows, ["monocular"], [2000, 10000], ["tensorial", "gaussian_avatars"],
                              {"monocular": {0: [12, 6, 3]}})
    lines = text.splitlines()
    mean = next(l for l in lines if l.startswith("| **tensorial**"))
    assert "21.00 / 25.00" in mean and "23.00 / 27.00 (1)" in mean  # seed 1 has no 10k run yet
    diff = next(l for l in lines if l.startswith("- tensorial - gaussian_avatars"))
    assert "2000: -0.50 / -1.50" in diff and "10000" not in diff
    assert "(head per seed -1.50, -1.50)" in diff
    assert "3 expression classes of 3 to 12" in text and "4.0x" in text
    assert "novel views" not in text  # a monocular subject has no val split


def test_too_short_a_schedule_is_one_error(capsys):
    with pytest.raises(SystemExit) as e:
        convergence.main(["--lengths", "50"])
    assert e.value.code == 2 and "at least 100 iterations" in capsys.readouterr().err
