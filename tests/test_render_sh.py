"""render.sh drives each subject with its OWN FREE sequence.

Several subjects' exports share one parent folder (NeRSemble layout). The selection lives in
utils/subject_ids.py; these tests build folder skeletons only (no images: nothing is rendered)
and check the helper, then run render.sh itself with a stand-in interpreter that records the
render.py calls instead of rendering (every other Python call goes to the real interpreter), so
the test sees which --target each model gets.
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path


from utils.subject_ids import main as subject_ids_main
from utils.subject_ids import own_free_sequence, subject_id

REPO = Path(__file__).resolve().parent.parent
NERSEMBLE_TAIL = "_v16_DS4_whiteBg_staticOffset_maskBelowLine"


def nersemble_parent(root: Path) -> Path:
    """Three subjects side by side: 306 and 074 with FREE sequences, 218 without."""
    parent = root / "nersemble"
    for sid in ("306", "074", "218"):
        (parent / f"UNION10EMOEXP_{sid}_eval_600{NERSEMBLE_TAIL}").mkdir(parents=True)
        (parent / f"{sid}_EXP-1{NERSEMBLE_TAIL}").mkdir()
    for sid in ("074", "306"):  # 074 sorts first: the old "first *FREE*" rule picks it for all
        (parent / f"{sid}_FREE{NERSEMBLE_TAIL}").mkdir()
    return parent


def test_subject_id_from_folder_names():
    assert subject_id(f"UNION10EMOEXP_306_eval_600{NERSEMBLE_TAIL}") == "306"
    assert subject_id(f"306_FREE{NERSEMBLE_TAIL}") == "306"
    assert subject_id(f"074_EXP-1{NERSEMBLE_TAIL}") == "074"
    assert subject_id("UNION_s000_v16_DS5_whiteBg_staticOffset") == "s000"
    assert subject_id("s001_FREE_v16_DS5_whiteBg_staticOffset") == "s001"
    assert subject_id("avatar") is None and subject_id("UNION") is None


def test_each_subject_gets_its_own_free_sequence(tmp_path, capsys):
    parent = nersemble_parent(tmp_path)
    for sid in ("306", "074"):
        for source in (f"UNION10EMOEXP_{sid}_eval_600{NERSEMBLE_TAIL}", f"{sid}_EXP-1{NERSEMBLE_TAIL}"):
            found, _ = own_free_sequence(parent / source)
            assert found == (parent / f"{sid}_FREE{NERSEMBLE_TAIL}").resolve()
    found, why = own_free_sequence(parent / f"UNION10EMOEXP_218_eval_600{NERSEMBLE_TAIL}")
    assert found is None and "218" in why and "218_FREE" in why

    # The synthetic layout (one parent per identity) too, and a second export of the same
    # subject at another resolution: the one with the source's export settings wins.
    synth = tmp_path / "synthetic" / "s000"
    for name in ("UNION_s000_v16_DS5_whiteBg_staticOffset", "s000_FREE_v16_DS2_whiteBg_staticOffset",
                 "s000_FREE_v16_DS5_whiteBg_staticOffset"):
        (synth / name).mkdir(parents=True)
    found, _ = own_free_sequence(synth / "UNION_s000_v16_DS5_whiteBg_staticOffset")
    assert found.name == "s000_FREE_v16_DS5_whiteBg_staticOffset"

    # The command-line form render.sh calls: the path, or one line and nothing on stdout.
    assert subject_ids_main(["free-sequence", str(parent / f"306_EXP-1{NERSEMBLE_TAIL}")]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str((parent / f"306_FREE{NERSEMBLE_TAIL}").resolve()) and err == ""
    assert subject_ids_main(["free-sequence", str(parent / f"UNION10EMOEXP_218_eval_600{NERSEMBLE_TAIL}")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "skipped" in err
    assert subject_ids_main(["free-sequence", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err


def fake_interpreter(tmp_path: Path, log: Path) -> Path:
    """A virtualenv-like folder whose bin/python logs ``render.py ...`` calls and runs the rest
    with the real interpreter (render.sh takes $VIRTUAL_ENV/bin/python as its PYTHON)."""
    venv = tmp_path / "fake_venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/usr/bin/env bash\n"
                      'if [[ "${1:-}" == "render.py" ]]; then\n'
                      f'    printf "%s\\n" "$*" >> "{log}"; exit 0\n'
                      "fi\n"
                      f'exec "{sys.executable}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return venv


def test_render_sh_drives_each_model_with_its_own_free_sequence(tmp_path):
    parent = nersemble_parent(tmp_path / "data")
    models = {}
    for sid in ("306", "074", "218"):
        model = tmp_path / "output" / f"avatar_{sid}"
        model.mkdir(parents=True)
        source = parent / f"UNION10EMOEXP_{sid}_eval_600{NERSEMBLE_TAIL}"
        (model / "config.yaml").write_text(f"config: {{}}\nsource_path: {source}\neval: true\n")
        models[sid] = model
    log = tmp_path / "render_calls.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("CONDA_PREFIX",)}
    env["VIRTUAL_ENV"] = str(fake_interpreter(tmp_path, log))
    proc = subprocess.run(["bash", str(REPO / "render.sh"), *map(str, models.values())],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()

    def self_targets(model: Path) -> list[str]:
        """--target of this model's render.py calls without --camera (self-reenactment)."""
        out = []
        for call in calls:
            args = call.split()
            if args[args.index("-m") + 1] == str(model) and "--target" in args and "--camera" not in args:
                out.append(args[args.index("--target") + 1])
        return out

    for sid in ("306", "074"):
        assert self_targets(models[sid]) == [str((parent / f"{sid}_FREE{NERSEMBLE_TAIL}").resolve())], calls
        assert f"render.py -m {models[sid]} --split test --video" in calls
    assert self_targets(models["218"]) == []  # no FREE sequence of its own: skipped ...
    skip_lines = [ln for ln in proc.stderr.splitlines() if "218" in ln and "skipped" in ln]
    assert len(skip_lines) == 1, proc.stderr  # ... with one line saying so
    # cross-identity: 306 is driven by 074's FREE sequence seen by its own camera 8
    assert (f"render.py -m {models['306']} --target {(parent / f'074_FREE{NERSEMBLE_TAIL}').resolve()} "
            "--camera 8 --video") in calls
