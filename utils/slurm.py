"""What SLURM says, through its command-line tools: partitions (for launch.py's checks before it
submits), job states (``sacct``, then ``squeue``/``scontrol`` where accounting keeps no record),
pending reasons, and, inside a job, what SLURM itself is doing to the job (requeue, cancel).

Every query returns None (or an empty result) where the tool is missing or fails: callers decide
what an unknown answer means. No torch, no submitit: importable anywhere.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

QUERY_TIMEOUT_S = 30
# Job states after which a job runs no more (sacct/squeue spelling; "CANCELLED by 0" is cut to its word).
FINAL_STATES = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
                          "OUT_OF_MEMORY", "TIMEOUT", "REVOKED"})
# Pending reasons that mean "never, as submitted" rather than "not yet": the hint says what to change.
HOPELESS_REASONS = {
    "PartitionConfig": "the job asks for more than the partition gives (CPUs, GPUs or nodes)",
    "PartitionTimeLimit": "--slurm-time is above the partition's time limit",
    "PartitionNodeLimit": "the job asks for more nodes than the partition allows",
    "BadConstraints": "no node of the partition has what the job asks for",
    "InvalidAccount": "--slurm-account is not one of yours",
    "InvalidQOS": "--slurm-qos is not one you may use",
    "QOSMaxWallDurationPerJobLimit": "--slurm-time is above the QOS's time limit",
    "ReqNodeNotAvail": "the nodes the job needs are down, drained or reserved",
}


def run_tool(args: list[str], timeout: float = QUERY_TIMEOUT_S) -> str | None:
    """stdout of a SLURM command, or None when it is missing, fails or hangs."""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


# -- partitions ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Partition:
    """What a partition's nodes offer, the most any one node has (a job runs on one node).

    ``max_time_min`` None: no limit. ``available``: the partition accepts jobs (state ``up``)."""
    name: str
    nodes: int
    max_cpus: int
    max_gpus: int
    max_time_min: int | None
    available: bool
    default: bool


def gpu_count(gres: str) -> int:
    """GPUs in a node's gres string: ``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:2,shard:8`` -> 2, 4, 2;
    ``(null)`` -> 0."""
    return sum(int(m.group(1)) for m in re.finditer(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres.strip()))


def parse_time_limit(text: str) -> int | None:
    """Minutes (rounded up) of a SLURM time limit: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM``, ``D-HH:MM:SS``; None for ``infinite``/``UNLIMITED``."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, hours, minutes, seconds = 0, 0, 0, 0
    if "-" in text:
        day_text, text = text.split("-", 1)
        days = int(day_text)
        hours, minutes, seconds = ([int(p) for p in text.split(":")] + [0, 0])[:3]
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:
            minutes = parts[0]
        elif len(parts) == 2:
            minutes, seconds = parts
        else:
            hours, minutes, seconds = parts[:3]
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def partitions() -> dict[str, Partition] | None:
    """Every partition SLURM knows (``sinfo``), by name; None when sinfo cannot answer."""
    out = run_tool(["sinfo", "-h", "-N", "-o", "%P|%N|%c|%G|%l|%a"])
    if out is None:
        return None
    rows: dict[str, dict] = {}
    for line in out.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6:
            continue
        name, node, cpus, gres, limit, avail = fields
        default = name.endswith("*")
        name = name.rstrip("*")
        row = rows.setdefault(name, {"nodes": set(), "cpus": 0, "gpus": 0, "limit": limit, "avail": avail,
                                     "default": default})
        row["nodes"].add(node)
        row["cpus"] = max(row["cpus"], int(re.sub(r"\D", "", cpus) or 0))
        row["gpus"] = max(row["gpus"], gpu_count(gres))
    return {name: Partition(name, len(r["nodes"]), r["cpus"], r["gpus"], parse_time_limit(r["limit"]),
                            r["avail"] == "up", r["default"]) for name, r in rows.items()}


# -- job states ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobState:
    """A job's state and, while it pends, why. ``source``: which tool said so."""
    state: str
    reason: str | None
    source: str

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def _word(state: str) -> str:
    return state.split()[0].rstrip("+").upper() if state.strip() else "UNKNOWN"


def queue_states(job_ids: list[str]) -> dict[str, JobState] | None:
    """States of the jobs ``squeue`` still lists (pending, running, completing), by job id as given
    (``123`` or array task ``123_4``); None when squeue cannot answer. A job it does not list has
    left the queue (ended, or not yet visible)."""
    if not job_ids:
        return {}
    out = run_tool(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r"])
    if out is None:
        return None
    states = {}
    for line in out.splitlines():
        fields = line.strip().split("|")
        if len(fields) == 3:
            job, state, reason = fields
            states[job] = JobState(_word(state), None if reason in ("None", "") else reason, "squeue")
    return states


def accounting_state(job_id: str) -> JobState | None:
    """The job's state in SLURM's accounting (``sacct``); None where it keeps no record of it."""
    out = run_tool(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State,Reason"])
    if not out:
        return None
    for line in out.splitlines():
        fields = line.split("|")
        if len(fields) >= 2 and fields[0] == job_id:
            reason = fields[2] if len(fields) > 2 and fields[2] not in ("None", "") else None
            return JobState(_word(fields[1]), reason, "sacct")
    return None


def controller_job(job_id: str) -> dict[str, str] | None:
    """``scontrol show job -o`` as a dict (``JobState``, ``Restarts``, ``Reason`` ...), or None."""
    out = run_tool(["scontrol", "show", "job", "-o", job_id])
    if not out:
        return None
    first = out.splitlines()[0]
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", first))


# -- inside a job -------------------------------------------------------------------------------

def slurm_action_on_this_job() -> str | None:
    """Inside a SLURM job that was just sent SIGTERM: what SLURM is doing to it.

    ``"requeued"``: SLURM itself requeued it (preemption, ``scontrol requeue``, a node failure):
    its restart count went up, and it will run again on its own. ``"cancelled"``: it is ending and
    will not run again (``scancel``). None: SLURM is doing neither (the signal came from elsewhere),
    or this is not a SLURM job, or SLURM cannot say.

    SLURM raises ``Restarts`` when it requeues a job, before it signals the job's processes; a
    cancelled job is already COMPLETING or CANCELLED with its count unchanged."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    info = controller_job(job_id)
    if info is None:
        return None
    started_as = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if int(info.get("Restarts", "0") or 0) > started_as:
        return "requeued"
    if _word(info.get("JobState", "")) in ("COMPLETING", "CANCELLED"):
        return "cancelled"
    return None
