"""launch.py on a real SLURM (slurmctld, two slurmd, munge, slurmdbd + MariaDB from Debian's
packages, brought up on this machine by scripts/local_slurm.sh; root only, skipped with the reason
elsewhere).

Two launches run side by side:
- on partition ``gpu`` (fake GPUs, one per job), five copies of one tiny subject, each meeting
  what a cluster does to jobs: ``scontrol requeue``, the time limit (SLURM's warning signal),
  preemption by a job of the higher-priority partition ``urgent``, ``scancel`` while running and
  ``scancel`` while pending;
- on partition ``cpu`` (no GPUs, ``--gpus 0``), two more copies straight through to one table.
Every copy that is not cancelled must end at the final iteration with the same checkpoint as the
straight runs, bit for bit; the cancelled ones are reported as cancelled (exit status 1), never
requeued. Requeued jobs are released at once (``scontrol update StartTime=now``) instead of waiting
SLURM's requeue hold.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flame_fixtures import write_small_flame  # noqa: E402
from subject_fixtures import write_fake_subject  # noqa: E402
from test_launch import one_error_line, train_process  # noqa: E402
from test_train import assert_same_checkpoint  # noqa: E402

LOCAL_SLURM = REPO / "scripts" / "local_slurm.sh"
SLURM_DIR = Path(os.environ.get("LOCAL_SLURM_DIR", "/tmp/avatar-slurm"))
CONFIGS = ["--config", str(REPO / "configs/gaussian_avatars.yaml"), "--config", str(REPO / "configs/demo.yaml")]
TRAIN_OPTIONS = ["--eval", "--quiet", "--iterations", "60", "--set", "run.save_interval=10",
                 "--set", "run.eval_interval=1000"]
FINAL = "iteration_0000060"
FIRST_CHECKPOINT = "iteration_0000010"
# subject -> what happens to its job on partition gpu
SCENARIOS = {"requeued": "scontrol requeue", "timelimit": "time limit", "preempted": "preemption",
             "cancel_running": "scancel while running", "cancel_pending": "scancel while pending"}
STRAIGHT = ("straight1", "straight2")  # partition cpu, --gpus 0
LAUNCH_TIMEOUT_S = 1500


def cluster_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to start SLURM's daemons (CI runs as root)"
    missing = [t for t in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sbatch")
               if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]
    if missing:
        return f"SLURM not installed ({', '.join(missing)} missing): scripts/local_slurm.sh install"
    return None


pytestmark = pytest.mark.skipif(cluster_unavailable() is not None, reason=str(cluster_unavailable()))


@pytest.fixture(scope="module")
def cluster():
    """The local SLURM's environment (SLURM_CONF); brought up here, and down again after if it was
    not up before."""
    env = {**os.environ, "SLURM_CONF": str(SLURM_DIR / "slurm.conf")}
    was_up = (SLURM_DIR / "slurm.conf").is_file() and subprocess.run(
        ["scontrol", "ping"], env=env, capture_output=True, timeout=30).returncode == 0
    proc = subprocess.run([str(LOCAL_SLURM), "up"], capture_output=True, text=True, timeout=180)
    if proc.returncode != 0:
        pytest.fail(f"scripts/local_slurm.sh up failed:\n{proc.stdout}\n{proc.stderr}")
    subprocess.run(["scancel", "--user", "root"], env=env, timeout=30)  # nothing left from an earlier run
    yield env
    subprocess.run(["scancel", "--user", "root"], env=env, timeout=30)
    if not was_up:
        subprocess.run([str(LOCAL_SLURM), "down"], capture_output=True, timeout=180)


def slurm(env, *args, check=True) -> str:
    proc = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {proc.stderr}")
    return proc.stdout


def make_subjects(root: Path, names) -> dict:
    """Copies of one tiny subject (same images), each in a folder of its own name."""
    flame_path, n_vertices = write_small_flame(root / "flame")
    subjects = {}
    for name in names:
        fake = write_fake_subject(root / name, n_cameras=4, n_timesteps=3, width=48, height=64,
                                  n_vertices=n_vertices, distance=0.6, seed=0)
        subjects[name] = fake.union.rename(root / name / name)
    return {"flame": flame_path, "subjects": subjects}


def job_ids(out: Path, timeout: float = 300) -> dict[str, str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        record = json.loads((out / "launch.json").read_text()) if (out / "launch.json").is_file() else {}
        ids = {n: e["job_id"] for n, e in record.get("subjects", {}).items()}
        if ids and all(ids.values()):
            return ids
        time.sleep(0.5)
    raise AssertionError(f"{out}/launch.json never listed the job ids")


def elapsed_minutes(env, job: str) -> float:
    run_time = dict(kv.split("=", 1) for kv in slurm(env, "scontrol", "show", "job", "-o", job).split()
                    if "=" in kv)["RunTime"]
    days, _, clock = run_time.rpartition("-")
    h, m, s = (int(x) for x in clock.split(":"))
    return (int(days or 0) * 86400 + h * 3600 + m * 60 + s) / 60


def pending_signal(pid: int, sig: int) -> bool:
    """Whether ``sig`` waits to be delivered to the (stopped) process ``pid``; True once the
    process has gone (SLURM sends SIGCONT with its signals, so it may have handled it already)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    masks = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask & (1 << (sig - 1)) for mask in masks)


@contextlib.contextmanager
def held(pid: int):
    """``pid`` stopped (SIGSTOP) inside the block and continued after, unless it has ended (SLURM
    sends SIGCONT with its own signals, so a held process may go on and end meanwhile)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


class ClusterEvents(threading.Thread):
    """Does to each job of the gpu launch what its scenario says, once its train.py has written
    the first checkpoint (each in a thread of its own: the time limit takes a while), and releases
    requeued jobs from SLURM's requeue hold. Errors are collected for the test to report."""

    def __init__(self, env, out: Path):
        super().__init__(daemon=True)
        self.env, self.out = env, out
        self.done: dict[str, str] = {}
        self.errors: list[str] = []
        self.stop = threading.Event()
        # A preemption requeues every job beside it too: never while train.py is held for the time limit.
        self.neighbours = threading.Lock()

    def error(self, what: str, exc: BaseException) -> None:
        self.errors.append(f"{what}: {type(exc).__name__}: {exc}")
        print(f"[cluster events] {self.errors[-1]}", flush=True)

    def run(self):
        try:
            ids = job_ids(self.out)
            # The last array task pends behind the others (two fake GPUs): cancel it there, once
            # the launcher has seen it pending (it polls every 2 s).
            time.sleep(6)
            job = ids["cancel_pending"]
            state = slurm(self.env, "squeue", "-h", "-j", job, "-o", "%T").strip()
            if state != "PENDING":
                self.errors.append(f"cancel_pending was {state!r}, not PENDING, when it was to be cancelled")
            slurm(self.env, "scancel", job)
            self.done["cancel_pending"] = "done"
        except Exception as exc:
            self.error("cancel_pending", exc)
            return
        while not self.stop.is_set():
            try:
                self.release_held_jobs()
            except Exception as exc:  # a slow controller: try again at the next round
                print(f"[cluster events] release: {exc}", flush=True)
            for name in ("requeued", "timelimit", "preempted", "cancel_running"):
                if name not in self.done and (self.out / name / "checkpoints" / FIRST_CHECKPOINT).is_dir():
                    pid = train_process(self.out / name)
                    if pid is not None:
                        self.done[name] = "acting"
                        threading.Thread(target=self.act, args=(name, ids[name], pid), daemon=True).start()
            time.sleep(0.2)

    def act(self, name, job, pid):
        try:
            getattr(self, name)(job, pid)
            self.done[name] = "done"
        except Exception as exc:
            self.error(name, exc)

    def release_held_jobs(self):
        for line in slurm(self.env, "squeue", "-h", "-t", "PD", "-o", "%i|%r").splitlines():
            job, reason = line.strip().split("|")
            if reason == "BeginTime":
                # and undo the short time limit of the time-limit scenario, or it would be warned again
                slurm(self.env, "scontrol", "update", f"JobId={job}", "StartTime=now", "TimeLimit=60", check=False)

    def requeued(self, job, pid):
        slurm(self.env, "scontrol", "requeue", job)

    def timelimit(self, job, pid):
        # Hold train.py still (a slow step), bring the time limit within SLURM's warning lead, and
        # let it go on once SLURM's SIGUSR1 waits for it.
        with self.neighbours, held(pid):
            limit = math.floor(elapsed_minutes(self.env, job)) + 3  # 120-180 s left: within the 180 s lead
            slurm(self.env, "scontrol", "update", f"JobId={job}", f"TimeLimit={limit}")
            deadline = time.time() + 150
            while not pending_signal(pid, signal.SIGUSR1):
                if time.time() > deadline:
                    raise AssertionError("SLURM's time-limit warning (SIGUSR1) never reached train.py")
                time.sleep(0.2)

    def preempted(self, job, pid):
        # A job of the urgent partition that needs both GPUs of the node: SLURM requeues gpu jobs
        # (the one running beside this one too, which then resumes like any requeued job). Held at
        # its checkpoint (a slow step) until the other jobs have had their events, so that the
        # preemption meets no other scenario half done; SLURM's SIGCONT and SIGTERM release it.
        with held(pid):
            deadline = time.time() + 600
            while any(self.done.get(n) != "done" for n in ("requeued", "timelimit", "cancel_running")):
                if time.time() > deadline:
                    raise AssertionError(f"the other scenarios never ended: {self.done}")
                time.sleep(0.2)
            with self.neighbours:
                slurm(self.env, "sbatch", "-p", "urgent", "--gres=gpu:2", "-o", "/dev/null", "--wrap", "sleep 3")
                deadline = time.time() + 120
                while Path(f"/proc/{pid}").exists() and time.time() < deadline:  # until the preemption is done
                    time.sleep(0.2)

    def cancel_running(self, job, pid):
        slurm(self.env, "scancel", job)


def launch_cmd(subjects, flame, out, *options):
    return [sys.executable, str(REPO / "launch.py"), *map(str, subjects), "--launcher", "slurm",
            "--output-root", str(out), *CONFIGS, "--flame", str(flame), "--protocol", "ga", "--poll", "2",
            "--slurm-time", "60", "--slurm-cpus", "1", *options, "--", *TRAIN_OPTIONS]


@pytest.fixture(scope="module")
def launched(cluster, tmp_path_factory, lpips_weights):
    root = tmp_path_factory.mktemp("slurm")
    data = make_subjects(root / "data", [*SCENARIOS, *STRAIGHT])
    out_gpu, out_cpu = root / "gpu", root / "cpu"
    logs = {k: open(root / f"launch_{k}.log", "w") for k in ("gpu", "cpu")}
    start = time.time()
    gpu = subprocess.Popen(launch_cmd([data["subjects"][n] for n in SCENARIOS], data["flame"], out_gpu,
                                      "--slurm-partition", "gpu"),
                           cwd=REPO, env=cluster, stdout=logs["gpu"], stderr=subprocess.STDOUT)
    cpu = subprocess.Popen(launch_cmd([data["subjects"][n] for n in STRAIGHT], data["flame"], out_cpu,
                                      "--slurm-partition", "cpu", "--gpus", "0"),
                           cwd=REPO, env=cluster, stdout=logs["cpu"], stderr=subprocess.STDOUT)
    events = ClusterEvents(cluster, out_gpu)
    events.start()
    try:
        codes = {k: p.wait(timeout=LAUNCH_TIMEOUT_S) for k, p in (("gpu", gpu), ("cpu", cpu))}
    finally:
        events.stop.set()
        for p in (gpu, cpu):
            if p.poll() is None:
                p.kill()
        for f in logs.values():
            f.close()
    print(f"both launches took {time.time() - start:.0f} s")
    history = slurm(cluster, "sacct", "-n", "-P", "-D", "-X", "-o", "JobID,State", "-S", "now-1hour")
    return {**data, "out": {"gpu": out_gpu, "cpu": out_cpu}, "codes": codes, "events": events,
            "log": {k: (root / f"launch_{k}.log").read_text() for k in logs}, "history": history}


def states_of(history: str, job: str) -> list[str]:
    return [line.split("|")[1].split()[0] for line in history.splitlines() if line.split("|")[0] == job]


@pytest.mark.slow
def test_straight_subjects_on_a_cpu_partition_end_with_one_table(launched):
    assert launched["codes"]["cpu"] == 0, launched["log"]["cpu"]
    out = launched["out"]["cpu"]
    table = json.loads((out / "results_all.json").read_text())
    assert set(table["models"]) == {str(out / n) for n in STRAIGHT}
    assert table["mean"]["val"]["n_models"] == 2
    record = json.loads((out / "launch.json").read_text())
    assert all(e["outcome"] == "done" for e in record["subjects"].values()), record


@pytest.mark.slow
def test_every_cluster_event_is_met(launched):
    events = launched["events"]
    assert not events.errors, events.errors
    assert set(events.done) == set(SCENARIOS), (events.done, launched["log"]["gpu"])
    # Cancelled jobs make the launch end with 1, the others in its table.
    assert launched["codes"]["gpu"] == 1, launched["log"]["gpu"]
    out = launched["out"]["gpu"]
    table = json.loads((out / "results_all.json").read_text())
    assert set(table["models"]) == {str(out / n) for n in ("requeued", "timelimit", "preempted")}
    assert "pending (" in launched["log"]["gpu"]  # jobs waiting for a GPU say why


@pytest.mark.slow
@pytest.mark.parametrize("name", ["requeued", "timelimit", "preempted"])
def test_requeued_jobs_resume_to_the_straight_run_bit_for_bit(launched, name):
    out = launched["out"]["gpu"]
    record = json.loads((out / "launch.json").read_text())
    assert record["subjects"][name]["outcome"] == "done", record["subjects"][name]
    stages = (out / name / "slurm" / "stages.log").read_text()
    trains = [line for line in stages.splitlines() if line.startswith("== ") and ": train: " in line]
    assert len(trains) >= 2 and trains[-1].endswith("--resume"), stages
    job = record["subjects"][name]["job_id"]
    states = states_of(launched["history"], job)
    if name == "requeued":
        assert "REQUEUED" in states and "SLURM requeued the job" in stages, (states, stages)
    elif name == "preempted":
        assert "PREEMPTED" in states and "SLURM requeued the job" in stages, (states, stages)
    else:  # the warning: train.py saved (exit code 3) and the job requeued itself
        assert "stopped for a requeue, exit code 3" in stages or "exited with 3" in stages, stages
        assert "REQUEUED" in states, states
    assert states[-1] == "COMPLETED", states
    assert_same_checkpoint(launched["out"]["cpu"] / STRAIGHT[0] / "checkpoints" / FINAL,
                           out / name / "checkpoints" / FINAL)


@pytest.mark.slow
def test_cancelled_jobs_are_reported_cancelled_and_not_requeued(launched):
    out = launched["out"]["gpu"]
    record = json.loads((out / "launch.json").read_text())
    running, pending = record["subjects"]["cancel_running"], record["subjects"]["cancel_pending"]
    assert running["outcome"].startswith("cancelled: ") and "scancel" in running["outcome"], running
    assert pending["outcome"] == "cancelled: cancelled (scancel) before it started", pending
    assert states_of(launched["history"], running["job_id"]) == ["CANCELLED"]
    # SLURM keeps no record of an array task cancelled before it was started
    assert states_of(launched["history"], pending["job_id"]) in ([], ["CANCELLED"])
    # the running one saved on the way out: the next launch resumes it
    saved = sorted(p.name for p in (out / "cancel_running" / "checkpoints").iterdir())
    assert saved and FINAL not in saved, saved
    stages = (out / "cancel_running" / "slurm" / "stages.log").read_text()
    assert len([line for line in stages.splitlines() if ": train: " in line]) == 1, stages
    assert not (out / "cancel_pending" / "checkpoints").exists()


@pytest.mark.slow
def test_status_names_cancelled_jobs(launched, cluster):
    result = subprocess.run([sys.executable, str(REPO / "launch.py"), "--status", "--output-root",
                             str(launched["out"]["gpu"])], cwd=REPO, env=cluster, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "cancelled" in rows["cancel_running"] and "done" in rows["requeued"], result.stdout


# -- requests the cluster cannot run: one line before anything is submitted -----------------------

@pytest.fixture(scope="module")
def one_subject(tmp_path_factory):
    return make_subjects(tmp_path_factory.mktemp("one"), ["only"])


def refused(cluster, one_subject, tmp_path, *options) -> str:
    cmd = launch_cmd([one_subject["subjects"]["only"]], one_subject["flame"], tmp_path / "out", *options)
    result = subprocess.run(cmd, cwd=REPO, env=cluster, capture_output=True, text=True, timeout=120)
    line = one_error_line(result)
    assert not (tmp_path / "out" / "launch.json").exists()  # nothing was submitted
    return line


@pytest.mark.parametrize("options, expected", [
    (["--slurm-partition", "nosuch"], "no such partition (sinfo lists: cpu, gpu, urgent)"),
    (["--slurm-partition", "cpu"], "partition cpu has no GPUs"),
    (["--slurm-partition", "cpu", "--gpus", "0", "--slurm-cpus", "8"], "at most 2 CPUs"),
    (["--slurm-partition", "gpu", "--slurm-time", "3"], "--slurm-time 3"),
])
def test_requests_slurm_cannot_run_are_one_line(cluster, one_subject, tmp_path, options, expected, lpips_weights):
    # launch_cmd's own --slurm-cpus / --slurm-time come first; the later ones win (argparse)
    assert expected in refused(cluster, one_subject, tmp_path, *options)


def test_sbatch_refusal_is_one_line(cluster, one_subject, tmp_path, lpips_weights):
    # A node feature no node has: sinfo's summary cannot tell, sbatch refuses the array.
    cmd = launch_cmd([one_subject["subjects"]["only"]], one_subject["flame"], tmp_path / "out",
                     "--slurm-partition", "gpu")
    result = subprocess.run(cmd, cwd=REPO, env={**cluster, "SBATCH_CONSTRAINT": "nosuchfeature"},
                            capture_output=True, text=True, timeout=120)
    line = one_error_line(result)
    assert line.startswith("error: sbatch refused the jobs: ") and "feature" in line.lower(), line
