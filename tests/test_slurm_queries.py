"""utils.slurm's parsing and launch.py's decisions from what SLURM says, with SLURM's answers
given (the real cluster: tests/test_slurm_cluster.py)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import launch  # noqa: E402
from utils import slurm  # noqa: E402


@pytest.mark.parametrize("gres, gpus", [("(null)", 0), ("gpu:2", 2), ("gpu:a100:4(S:0-1)", 4),
                                        ("gpu:2,shard:8", 2), ("shard:8,gpu:tesla:1", 1), ("mps:100", 0)])
def test_gpu_count_from_gres(gres, gpus):
    assert slurm.gpu_count(gres) == gpus


@pytest.mark.parametrize("text, minutes", [("infinite", None), ("UNLIMITED", None), ("30", 30), ("30:00", 30),
                                           ("0:30", 1), ("2:00:00", 120), ("1-00:00:00", 1440), ("1-2", 1560),
                                           ("2-03:04", 2 * 1440 + 184)])
def test_time_limits(text, minutes):
    assert slurm.parse_time_limit(text) == minutes


def test_partitions_from_sinfo(monkeypatch):
    sinfo = "gpu*|g1|64|gpu:a100:4(S:0-1)|2-00:00:00|up\ngpu*|g2|32|gpu:a100:8|2-00:00:00|up\n" \
            "cpu|c1|128|(null)|infinite|up\ndebug|g1|64|gpu:a100:4|30:00|down\n"
    monkeypatch.setattr(slurm, "run_tool", lambda args, timeout=0: sinfo)
    parts = slurm.partitions()
    assert parts["gpu"] == slurm.Partition("gpu", 2, 64, 8, 2880, True, True)
    assert parts["cpu"] == slurm.Partition("cpu", 1, 128, 0, None, True, False)
    assert parts["debug"].max_time_min == 30 and not parts["debug"].available


@pytest.mark.parametrize("restarts, state, expected", [
    ("1", "COMPLETING", "requeued"),   # scontrol requeue or preemption: the count went up first
    ("2", "PENDING", "requeued"),
    ("0", "COMPLETING", "cancelled"),  # scancel
    ("0", "CANCELLED", "cancelled"),
    ("0", "RUNNING", None),            # SIGTERM from elsewhere: SLURM does nothing
])
def test_what_slurm_does_to_this_job(monkeypatch, restarts, state, expected):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    monkeypatch.setattr(slurm, "controller_job", lambda job: {"JobId": job, "Restarts": restarts, "JobState": state})
    assert slurm.slurm_action_on_this_job() == expected


def test_a_requeued_job_counts_from_its_own_restart(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # this attempt is the requeued one, still running
    monkeypatch.setattr(slurm, "controller_job", lambda job: {"Restarts": "1", "JobState": "RUNNING"})
    assert slurm.slurm_action_on_this_job() is None


def test_outside_slurm_nothing_is_asked(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(slurm, "controller_job", lambda job: pytest.fail("asked SLURM outside a job"))
    assert slurm.slurm_action_on_this_job() is None


class FakeSub:
    def __init__(self, job_id):
        self.job_id = job_id

    def done(self):  # submitit without accounting: no result file, sacct knows nothing
        return False


def test_a_job_slurm_no_longer_knows_ends_after_a_bounded_wait(monkeypatch, capsys):
    """No accounting: submitit would wait forever; squeue and scontrol are asked instead."""
    clock = [0.0]
    monkeypatch.setattr(launch.time, "monotonic", lambda: clock[0])
    queue = {"7_0": slurm.JobState("PENDING", "Resources", "squeue"), "7_1": slurm.JobState("RUNNING", None, "squeue")}
    monkeypatch.setattr(slurm, "queue_states", lambda ids: dict(queue))
    monkeypatch.setattr(slurm, "controller_job", lambda job: None)
    jobs = [launch.SubjectJob(n, "s", "o", [], [], [], "python", ".") for n in ("a", "b")]
    watcher = launch.SlurmWatcher(jobs, [FakeSub("7_0"), FakeSub("7_1")])
    assert watcher.ended() == []
    assert "[launch] a: pending (Resources)" in capsys.readouterr().out
    queue["7_0"] = slurm.JobState("PENDING", "PartitionConfig", "squeue")
    watcher.ended()
    assert "it will not start as asked" in capsys.readouterr().out
    del queue["7_1"]  # b left the queue; nothing knows of it
    assert watcher.ended() == []
    clock[0] = launch.UNKNOWN_GRACE_S - 1
    assert watcher.ended() == []
    clock[0] = launch.UNKNOWN_GRACE_S + 1
    assert watcher.ended() == ["b"]
    assert watcher.ended() == []  # each once


def test_scontrol_ends_the_wait_when_it_still_holds_the_record(monkeypatch):
    monkeypatch.setattr(slurm, "queue_states", lambda ids: {})
    monkeypatch.setattr(slurm, "controller_job", lambda job: {"JobState": "COMPLETED"})
    watcher = launch.SlurmWatcher([launch.SubjectJob("a", "s", "o", [], [], [], "python", ".")], [FakeSub("9")])
    assert watcher.ended() == ["a"]


class EndedSub(FakeSub):
    """A job that has ended; ``result_file``: whether submitit wrote its result."""

    def __init__(self, job_id, folder: Path, result_file: bool):
        super().__init__(job_id)
        self.paths = type("Paths", (), {"result_pickle": folder / f"{job_id}_result.pkl"})()
        if result_file:
            self.paths.result_pickle.write_bytes(b"")

    def result(self):
        if not self.paths.result_pickle.exists():
            pytest.fail("result() without a result file waits forever")
        return {}


def test_an_array_task_cancelled_before_it_started_is_cancelled(tmp_path):
    """sacct keeps no record of it: the state the launcher last saw is the outcome."""
    job = launch.SubjectJob("a", "s", str(tmp_path / "a"), [], [], [], "python", ".")
    assert launch.job_outcome(job, EndedSub("7_4", tmp_path, False), scheduler_state="CANCELLED") == \
        ("cancelled", "cancelled (scancel) before it started")
    state, message = launch.job_outcome(job, EndedSub("7_5", tmp_path, False))
    assert state == "failed" and message.startswith("ended without a result (scheduler state: unknown")
    assert launch.job_outcome(job, EndedSub("7_6", tmp_path, True)) == ("done", "done")


def test_a_job_that_reported_its_cancel_is_cancelled(tmp_path):
    job = launch.SubjectJob("a", "s", str(tmp_path / "a"), [], [], [], "python", ".")
    job.log_dir.mkdir(parents=True)
    launch.write_json(job.log_dir / "progress.json", {"job_id": "7_1", "state": "cancelled", "message": "scancel"})
    assert launch.job_outcome(job, EndedSub("7_1", tmp_path, False)) == ("cancelled", "scancel")
    # an earlier job's report is not this one's
    assert launch.job_outcome(job, EndedSub("8_1", tmp_path, False))[0] == "failed"


def test_a_pending_job_that_leaves_the_queue_without_a_record_was_cancelled(monkeypatch):
    queue = {"7_4": slurm.JobState("PENDING", "Resources", "squeue")}
    monkeypatch.setattr(slurm, "queue_states", lambda ids: dict(queue))
    monkeypatch.setattr(slurm, "controller_job", lambda job: None)
    monkeypatch.setattr(slurm, "accounting_state", lambda job: None)
    watcher = launch.SlurmWatcher([launch.SubjectJob("a", "s", "o", [], [], [], "python", ".")], [FakeSub("7_4")])
    assert watcher.ended() == []
    queue.clear()  # scancel: gone from squeue, and SLURM keeps no record of the array task
    assert watcher.ended() == ["a"] and watcher.last_state["a"] == "CANCELLED"
