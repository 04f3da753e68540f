#!/usr/bin/env python
"""Train, render and evaluate many subjects, one job each, on this machine or on SLURM (submitit).

    python launch.py SUBJECT [SUBJECT ...] | --subjects FILE  --launcher local|slurm
           [--gpus N] [--slurm-partition P] [--slurm-time MINUTES] [--slurm-cpus N]
           [--slurm-account A] [--slurm-qos Q] [--poll SECONDS]
           [--output-root output] [--config configs/tensorial.yaml ...] [--flame PATH]
           [--max-frames N] [--video] [--metrics M] [--lpips NET] [--mask fg] [--status]
           [-- train.py options]

Each subject is one job that runs, as subprocesses with this Python,
``train.py -s SUBJECT -m OUTPUT_ROOT/<name> --protocol paper ...`` (``--protocol ga`` to choose) (with ``--resume`` when
``OUTPUT/config.yaml`` exists), then ``render.py -m OUTPUT --split val test [--max-frames N]``, then
``evaluate.py -m OUTPUT [--metrics/--lpips/--mask]``. A job that fails leaves the others running.
When every job has ended, ``evaluate.py -m <all outputs> --out OUTPUT_ROOT/results_all.json``
prints one table (per subject and the mean).

Before anything is submitted, every subject folder, the training configuration (configs and
train.py options, resolved by ``train.py --check-config``), the LPIPS weights and (SLURM) the
request against the partition (GPUs, CPUs, time limit, as ``sinfo`` reports them) are checked;
each problem is one ``error:`` line naming what to change, exit status 2.

- ``--launcher local``: submitit's LocalExecutor, one job per GPU at a time (the GPUs torch sees,
  or ``--gpus N``), one job at a time on a machine without a GPU.
- ``--launcher slurm``: one SLURM job array (submitit), one GPU per job (``--gpus 0``: none, for
  CPU partitions). SLURM sends SIGUSR1 ``SIGNAL_DELAY_S`` seconds before the time limit; train.py
  then saves at the step boundary and the job requeues itself; the requeued job continues with
  ``--resume``. A pending job's reason is printed when it changes.

Requeue: the job is a submitit ``Checkpointable``. When submitit's handler catches SIGUSR1 (SLURM's
warning, or the local controller's time-out), ``SubjectJob.checkpoint`` passes the signal on to
train.py, waits until it has saved (exit code 3) and returns the job to requeue. When a stage is
stopped by SIGTERM, the job asks SLURM what it is doing (``utils.slurm``): a preemption or
``scontrol requeue`` (SLURM requeues the job itself; this attempt ends without a result), a cancel
(``scancel``: the job ends and is reported as cancelled; its saved state resumes at the next
launch), or neither (a stop from outside: the job asks submitit for the same requeue as above).
Locally the requeued job runs again in the same controller; on SLURM it goes back in the queue
(same job id).

Logs: ``OUTPUT_ROOT/<name>/slurm/``: ``stages.log`` (the output of train.py, render.py and
evaluate.py), ``progress.json`` (the job's stage and state) and submitit's own log files.
``OUTPUT_ROOT/launch.json`` records the launch and each subject's outcome (``done``,
``failed: ...``, ``cancelled: ...``); ``--status`` shows its jobs.

Exit status: 0 every subject done, 1 some failed or were cancelled, 2 bad input (one line on
stderr), 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from utils import slurm
from utils.atomic import write_text_atomic

# submitit reads its preemption signal when it is imported. SIGUSR1 is the one train.py saves on
# (submitit's default, SIGUSR2, would kill train.py, which SLURM signals as well).
os.environ["SUBMITIT_PREEMPT_SIGNAL"] = "USR1"
try:
    import submitit
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover - the set-up installs it
    print("error: the submitit package is missing: pip install -r requirements.txt", file=sys.stderr)
    sys.exit(2)

REPO = Path(__file__).resolve().parent
PREEMPT_SIGNAL = signal.SIGUSR1
SIGNAL_DELAY_S = 180        # SLURM's warning comes this long before the time limit
SIGNAL_RESOLUTION_S = 60    # ... and up to this much earlier (sbatch --signal: SLURM's event resolution)
MIN_WORK_S = 60             # the least a job should train before it is asked to stop
UNKNOWN_GRACE_S = 300       # a job neither queued nor on record for this long has ended (no accounting)
STOP_GRACE_S = 150          # how long a stopped train.py may take to save
LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # local jobs have no time limit
MAX_TIMEOUT_REQUEUES = 20   # SLURM time-outs after which a job is not requeued again
STAGES = ("train", "render", "evaluate")
EXIT_PREEMPTED = 3
# A stage stopped by a preemption: saved (3: train.py at its step boundary, render.py at a frame,
# keeping what it wrote), or killed by the signal before its handlers were up (evaluate.py reruns)
PREEMPTED_EXITS = (EXIT_PREEMPTED, -int(signal.SIGTERM), -int(PREEMPT_SIGNAL))
TRAIN_EXIT_MEANING = {0: "done", 1: "crashed (the last consistent state was saved)", 2: "bad input",
                      3: "preempted (state saved; resumes with --resume)",
                      4: "diverged (the last good state was saved)",
                      130: "interrupted (state saved; resumes with --resume)"}


class LaunchError(Exception):
    """Bad input: printed as one ``error:`` line, exit status 2."""


class StageFailed(RuntimeError):
    """A stage of a subject's job ended with a non-zero exit code."""


# -- small helpers ------------------------------------------------------------------------------

def now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def write_json(path: Path, data) -> None:
    """Write ``data`` as JSON atomically (readers never see half a file)."""
    write_text_atomic(path, json.dumps(data, indent=1))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def exit_meaning(stage: str, code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    if stage == "train":
        return TRAIN_EXIT_MEANING.get(code, "failed")
    return {0: "done", 2: "bad input", 3: "stopped (the frames written are kept; it continues)",
            130: "interrupted"}.get(code, "failed")


def wait_for_exit(proc: subprocess.Popen, timeout: float | None = None, poll_s: float = 0.2) -> int | None:
    """The exit code of ``proc``, or None if it still runs after ``timeout`` seconds.

    Reaps with ``os.waitpid`` instead of ``Popen.wait``: submitit's signal handler calls this while
    the main thread is waiting here too, and ``Popen.wait`` holds a lock that is not re-entrant."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while proc.returncode is None:
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by the caller this handler interrupted: it has ended
            if proc.returncode is None:
                proc.returncode = 0  # its status went to that caller (as Popen does in this case)
            break
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(poll_s)
    return proc.returncode


# -- the job: one subject -----------------------------------------------------------------------

class SubjectJob(Checkpointable):
    """Train, render and evaluate one subject, each stage a subprocess; requeued by submitit.

    Stages that finished are remembered across requeues (the job is pickled with its state)."""

    def __init__(self, name: str, subject: str, output: str, train_args: list[str], render_args: list[str],
                 evaluate_args: list[str], python: str, cwd: str):
        self.name, self.subject, self.output = name, subject, output
        self.train_args, self.render_args, self.evaluate_args = list(train_args), list(render_args), list(evaluate_args)
        self.python, self.cwd = python, cwd
        self.finished: list[str] = []
        self.attempt = 0
        self._child: subprocess.Popen | None = None
        self._stage: str | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_child"] = None  # a process handle does not travel with a requeued job
        return state

    # paths
    @property
    def log_dir(self) -> Path:
        return Path(self.output) / "slurm"

    @property
    def stages_log(self) -> Path:
        return self.log_dir / "stages.log"

    def command(self, stage: str) -> list[str]:
        if stage == "train":
            resume = ["--resume"] if (Path(self.output) / "config.yaml").is_file() else []
            return [self.python, str(REPO / "train.py"), "-s", self.subject, "-m", self.output,
                    *self.train_args, *resume]
        if stage == "render":
            return [self.python, str(REPO / "render.py"), "-m", self.output, "--split", "val", "test",
                    *self.render_args]
        return [self.python, str(REPO / "evaluate.py"), "-m", self.output, *self.evaluate_args]

    # reporting
    def report(self, state: str, message: str) -> None:
        """Record the job's state in progress.json and print it to the job's own log."""
        write_json(self.log_dir / "progress.json", {
            "job_id": current_job_id(), "state": state, "stage": self._stage, "message": message,
            "attempt": self.attempt, "finished": self.finished, "host": socket.gethostname(), "time": now()})
        with open(self.stages_log, "a") as log:  # the subject's whole story in one file
            log.write(f"== {now()} {state}: {message}\n")
        print(f"[job {self.name}] {state}: {message}", flush=True)

    # running
    def __call__(self) -> dict:
        # A requeue by SLURM itself restarts the job from its submission (not from a checkpoint):
        # SLURM's restart count keeps the attempts counted.
        self.attempt = max(self.attempt + 1, int(os.environ.get("SLURM_RESTART_COUNT") or 0) + 1)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for stage in STAGES:
            if stage not in self.finished:
                self.run_stage(stage)
                self.finished.append(stage)
        self._stage = None
        self.report("done", f"trained, rendered and evaluated {self.output}")
        return {"name": self.name, "output": self.output}

    def run_stage(self, stage: str) -> None:
        self._stage = stage
        cmd = self.command(stage)
        self.report("running", f"{stage} (attempt {self.attempt})")
        with open(self.stages_log, "a") as log:
            log.write(f"\n== {now()} job {current_job_id()} attempt {self.attempt}: {stage}: {' '.join(cmd)}\n")
            log.flush()
            self._child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd)
            code = wait_for_exit(self._child)
            log.write(f"== {now()} {stage} exited with {code}: {exit_meaning(stage, code)}\n")
        self._child = None
        if code == 0:
            return
        action = slurm.slurm_action_on_this_job()
        if action is not None:
            self.end_for_slurm(action, stage, code)
        if code in PREEMPTED_EXITS:
            self.requeue_after_preemption()
        message = f"{stage} exited with {code}: {exit_meaning(stage, code)} (log: {self.stages_log})"
        self.report("failed", message)
        raise StageFailed(message)

    def end_for_slurm(self, action: str, stage: str, code: int) -> None:
        """SLURM itself stopped this job: it requeued it (preemption, ``scontrol requeue``), and it
        will run again on its own, or it cancelled it (``scancel``). Either way this attempt ends
        here without a result: a result (even an error) would tell the launcher the job is over
        while it is not (requeued), and asking for a requeue of our own would fail (SLURM has done
        it) or undo a cancel."""
        if action == "requeued":
            self.report("requeued", f"{stage} stopped (exit code {code}): SLURM requeued the job (preemption or "
                                    "scontrol requeue); it continues with --resume")
        else:
            self.report("cancelled", f"{stage} stopped (exit code {code}): the job was cancelled (scancel); "
                                     f"its state is saved: launch again to continue (log: {self.stages_log})")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # no result file, no submitit requeue: SLURM decides what comes next

    def requeue_after_preemption(self) -> None:
        """A stage was stopped from outside (SIGTERM/SIGUSR1; train.py and render.py saved): hand
        the job to submitit's preemption handler, which checkpoints (``checkpoint``) and requeues it."""
        if signal.getsignal(PREEMPT_SIGNAL) in (signal.SIG_DFL, signal.SIG_IGN, None):
            return  # not inside a submitit job: nothing can requeue it, the caller reports it
        signal.raise_signal(PREEMPT_SIGNAL)

    def stop_child(self) -> None:
        """Stop the running stage: train.py saves at its step boundary (SIGUSR1, exit code 3);
        render.py and evaluate.py are simply run again."""
        child = self._child
        if child is None or child.returncode is not None:
            return
        child.send_signal(PREEMPT_SIGNAL if self._stage == "train" else signal.SIGTERM)
        code = wait_for_exit(child, timeout=STOP_GRACE_S)
        if code is None:
            child.kill()
            code = wait_for_exit(child)
        with open(self.stages_log, "a") as log:
            log.write(f"== {now()} {self._stage} stopped for a requeue, exit code {code}: "
                      f"{exit_meaning(self._stage, code)}\n")

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """submitit's preemption/time-out hook: stop the stage (train.py saves), requeue this job."""
        self.stop_child()
        self.report("requeued", f"stopped during {self._stage}; requeued, continues with --resume")
        return DelayedSubmission(self, *args, **kwargs)


def current_job_id() -> str | None:
    try:
        return submitit.JobEnvironment().job_id
    except Exception:  # not inside a submitit job
        return None


# -- command line -------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    own, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description="Train, render and evaluate many subjects, one job each (submitit).",
                                epilog="Everything after -- goes to train.py. Exit status: 0 all done, "
                                       "1 some subject failed, 2 bad input, 130 interrupted.")
    p.add_argument("subjects", nargs="*", help="subject folders (transforms_*.json)")
    p.add_argument("--subjects", dest="subject_files", action="append", default=[], metavar="FILE",
                   help="a file listing subject folders, one per line (# comments allowed)")
    p.add_argument("--launcher", choices=("local", "slurm"), help="run the jobs here or on SLURM")
    p.add_argument("--gpus", type=int, help="GPUs used at once, one job each (local: default all visible; "
                                            "slurm: array tasks running at once, default no limit). "
                                            "0: CPU-only jobs (slurm: for partitions without GPUs)")
    p.add_argument("--slurm-partition", help="default: the cluster's default partition")
    p.add_argument("--slurm-time", type=int, default=24 * 60, metavar="MINUTES",
                   help=f"time limit per job (default 1440; at least {min_slurm_minutes()}); "
                        "longer runs are requeued and resume")
    p.add_argument("--slurm-account")
    p.add_argument("--slurm-qos")
    p.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per job (default 8)")
    p.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                   help="slurm: how often the launcher asks SLURM about its jobs (default 30)")
    p.add_argument("--output-root", default=os.environ.get("OUTPUT_ROOT", "output"),
                   help="outputs go to OUTPUT_ROOT/<subject name>/ (default $OUTPUT_ROOT or output)")
    p.add_argument("--config", action="append", default=[], help="train.py config (default configs/tensorial.yaml)")
    p.add_argument("--flame", help="FLAME model pickle for train.py")
    p.add_argument("--protocol", choices=("paper", "ga"), default="paper",
                   help="train.py --protocol (default paper: test = each subject's own FREE sequence)")
    p.add_argument("--video", action="store_true", help="render.py --video")
    p.add_argument("--benchmark", action="store_true", help="render.py --benchmark")
    p.add_argument("--max-frames", type=int, metavar="N", help="render.py --max-frames: at most N frames per split")
    p.add_argument("--metrics", choices=("gaussian-avatars", "standard"), help="evaluate.py --metrics")
    p.add_argument("--lpips", choices=("vgg", "alex"), help="evaluate.py --lpips")
    p.add_argument("--mask", choices=("none", "fg"), help="evaluate.py --mask")
    p.add_argument("--status", action="store_true", help="show the jobs of the last launch in OUTPUT_ROOT")
    args = p.parse_args(own)
    args.train_args = train_args
    return args


def min_slurm_minutes() -> int:
    """The shortest --slurm-time that leaves a job time to train before SLURM's warning."""
    return -(-(SIGNAL_DELAY_S + SIGNAL_RESOLUTION_S + MIN_WORK_S) // 60)


SUBJECT_FILES = ("transforms_train.json", "transforms_val.json", "transforms_test.json")


def subject_problem(path: Path) -> str | None:
    """Why ``path`` is not a subject folder train.py can read, or None."""
    if not path.is_dir():
        return "subject folder not found"
    missing = [f for f in SUBJECT_FILES if not (path / f).is_file()]
    if missing:
        return (f"not a subject folder (no {', '.join(missing)}; a subject holds {', '.join(SUBJECT_FILES)}: "
                "give the folder of a GaussianAvatars/NeRSemble export)")
    return None


def read_subject_file(path: str) -> list[tuple[str, str]]:
    """(folder, where it was given: ``FILE, line N``) for each line of a --subjects file."""
    if not Path(path).is_file():
        raise LaunchError(f"--subjects {path}: file not found (it lists subject folders, one per line)")
    entries = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        folder = line.split("#", 1)[0].strip()
        if folder:
            entries.append((folder, f"--subjects {path}, line {number}"))
    return entries


def resolve_subjects(args) -> dict[str, Path]:
    """Subject name -> absolute folder; the name is the folder's name (OUTPUT_ROOT/<name>). Every
    folder is checked before anything runs; a bad one is one line naming where it was given."""
    given = [e for f in args.subject_files for e in read_subject_file(f)] + [(s, "the command line") for s in args.subjects]
    if not given:
        raise LaunchError("no subjects: give SUBJECT folders or --subjects FILE")
    subjects: dict[str, Path] = {}
    for folder, where in given:
        path = Path(folder).expanduser().absolute()
        problem = subject_problem(path)
        if problem:
            raise LaunchError(f"{where}: {folder}: {problem}")
        if path.name in subjects and subjects[path.name] != path:
            raise LaunchError(f"{where}: two subjects are named {path.name} ({subjects[path.name]} and {path}); "
                              "their outputs would collide: rename one folder")
        subjects[path.name] = path
    return subjects


def train_arguments(args) -> list[str]:
    configs = args.config or [str(REPO / "configs" / "tensorial.yaml")]
    for config in configs:
        if not Path(config).is_file():
            raise LaunchError(f"--config {config}: file not found")
    out = [a for c in configs for a in ("--config", str(Path(c).absolute()))] + ["--protocol", args.protocol]
    if args.flame:
        if not Path(args.flame).is_file():
            raise LaunchError(f"--flame {args.flame}: file not found")
        out += ["--flame", str(Path(args.flame).absolute())]
    return out + list(args.train_args)


def render_arguments(args) -> list[str]:
    out = (["--video"] if args.video else []) + (["--benchmark"] if args.benchmark else [])
    return out + (["--max-frames", str(args.max_frames)] if args.max_frames is not None else [])


def evaluate_arguments(args) -> list[str]:
    """evaluate.py's metric options, the same for each subject and the final table."""
    return [a for key in ("metrics", "lpips", "mask") if getattr(args, key) is not None
            for a in (f"--{key}", getattr(args, key))]


def make_jobs(args, root: Path) -> list[SubjectJob]:
    subjects = resolve_subjects(args)
    train_args = train_arguments(args)
    if args.max_frames is not None and args.max_frames < 1:
        raise LaunchError(f"--max-frames {args.max_frames}: give a positive number of frames")
    return [SubjectJob(name, str(folder), str(root / name), train_args, render_arguments(args),
                       evaluate_arguments(args), sys.executable, os.getcwd())
            for name, folder in subjects.items()]


def check_train_config(job: SubjectJob) -> None:
    """The jobs' configs and train.py options resolve (``train.py --check-config``, plugins
    imported; the same for every job): a bad key or value is one error here, not one failed job per
    subject after the queue."""
    res = subprocess.run(job.command("train") + ["--check-config"], cwd=job.cwd, capture_output=True, text=True)
    if res.returncode != 0:
        lines = (res.stderr.strip() or res.stdout.strip()).splitlines()
        why = lines[-1].removeprefix("error: ") if lines else f"exit status {res.returncode}"
        raise LaunchError(f"the jobs' train.py configuration does not resolve: {why}")


def check_lpips_weights(args) -> None:
    """Every job evaluates with LPIPS: missing or damaged weights fail here, not after training."""
    from utils.errors import UserFacingError
    from utils.lpips import load_lpips_state_dict, lpips_weights_path
    net = args.lpips or "vgg"  # both metric sets default to VGG
    try:
        load_lpips_state_dict(net, lpips_weights_path(net))
    except UserFacingError as exc:
        raise LaunchError(f"{exc} (evaluate.py needs them after training)") from None


# -- the launch record --------------------------------------------------------------------------

def launch_record(args, root: Path, jobs: list[SubjectJob]) -> dict:
    return {"launcher": args.launcher, "started": now(), "host": socket.gethostname(), "command": sys.argv,
            "subjects": {j.name: {"subject": j.subject, "output": j.output, "job_id": None,
                                  "submitit_folder": None, "outcome": None} for j in jobs}}


def save_record(root: Path, record: dict) -> None:
    write_json(root / "launch.json", record)


# -- local --------------------------------------------------------------------------------------

def local_gpu_slots(requested: int | None) -> list[int | None]:
    """GPU indices to run on, one job each (``[None]``: one job at a time on the CPU)."""
    count = 0 if requested == 0 else torch_gpu_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids: list = list(range(count))
    if visible is not None and count:
        ids = [v.strip() for v in visible.split(",") if v.strip()][:count]
        if not all(v.isdigit() for v in ids):
            raise LaunchError(f"CUDA_VISIBLE_DEVICES={visible}: give GPU indices (0,1,...) for --launcher local")
        ids = [int(v) for v in ids]
    if requested is not None:
        if requested < 0 or requested > len(ids):
            raise LaunchError(f"--gpus {requested}: this machine has {len(ids)} GPU(s) that torch can use")
        ids = ids[:requested]
    return ids or [None]


def torch_gpu_count() -> int:
    import torch  # only here: the launcher itself needs no torch otherwise
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def submit_local(job: SubjectJob, slot: int | None):
    executor = submitit.LocalExecutor(folder=job.log_dir)
    if slot is None:
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=0)
    else:
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=1, visible_gpus=[slot])
    return executor.submit(job)


def run_local(jobs: list[SubjectJob], args, root: Path, record: dict) -> dict[str, tuple[str, str]]:
    """Run the jobs through submitit's LocalExecutor, one per GPU slot at a time."""
    slots = local_gpu_slots(args.gpus)
    where = "the CPU, one job at a time" if slots == [None] else f"GPU(s) {', '.join(map(str, slots))}, one job each"
    print(f"[launch] {len(jobs)} subject(s) on {where}; logs under {root}/<name>/slurm/", flush=True)
    queue, running, outcomes = list(jobs), {}, {}
    watcher = ProgressWatcher(jobs)
    while queue or running:
        for slot in [s for s in slots if s not in running]:
            if not queue:
                break
            job = queue.pop(0)
            sub = submit_local(job, slot)
            running[slot] = (job, sub)
            record["subjects"][job.name].update(job_id=sub.job_id, submitit_folder=str(job.log_dir))
            save_record(root, record)
            print(f"[launch] {job.name}: started local job {sub.job_id} on "
                  f"{'the CPU' if slot is None else f'GPU {slot}'}", flush=True)
        time.sleep(1.0)
        watcher.print_changes()
        for slot, (job, sub) in list(running.items()):
            if sub.done():
                outcomes[job.name] = job_outcome(job, sub)
                del running[slot]
    watcher.print_changes()
    return outcomes


# -- slurm --------------------------------------------------------------------------------------

def check_slurm_available() -> None:
    for tool in ("sbatch", "srun"):
        if shutil.which(tool) is None:
            raise LaunchError(f"--launcher slurm: {tool} not found on this machine (run on a SLURM login node, "
                              "or use --launcher local)")


def gpus_per_job(args) -> int:
    return 0 if args.gpus == 0 else 1


def check_slurm_request(args) -> None:
    """What SLURM would refuse or leave pending forever, said before anything is submitted: the
    partition, its GPUs, CPUs and time limit (as ``sinfo`` reports them), and a time limit that
    leaves room before SLURM's warning signal."""
    if args.slurm_time < min_slurm_minutes():
        raise LaunchError(f"--slurm-time {args.slurm_time}: SLURM's warning signal comes {SIGNAL_DELAY_S} s (and up to "
                          f"{SIGNAL_RESOLUTION_S} s more) before the time limit, so such a job would be asked to stop "
                          f"as soon as it starts: give --slurm-time {min_slurm_minutes()} or more")
    if args.slurm_cpus < 1:
        raise LaunchError(f"--slurm-cpus {args.slurm_cpus}: give at least 1")
    if args.gpus is not None and args.gpus < 0:
        raise LaunchError(f"--gpus {args.gpus}: give 0 (CPU-only jobs) or more")
    known = slurm.partitions()
    if known is None:
        return  # sinfo cannot answer here: sbatch will say what it refuses
    if args.slurm_partition:
        part = known.get(args.slurm_partition)
        if part is None:
            raise LaunchError(f"--slurm-partition {args.slurm_partition}: no such partition "
                              f"(sinfo lists: {', '.join(sorted(known)) or 'none'})")
    else:
        part = next((p for p in known.values() if p.default), None)
        if part is None:
            raise LaunchError(f"this cluster has no default partition: give --slurm-partition "
                              f"({', '.join(sorted(known))})")
    where = f"partition {part.name}"
    if not part.available:
        raise LaunchError(f"{where} is not up (sinfo): choose another --slurm-partition")
    if gpus_per_job(args) > part.max_gpus:
        raise LaunchError(f"{where} has no GPUs (no gpu gres in sinfo): give --gpus 0 to run CPU-only jobs there, "
                          "or a partition with GPUs")
    if part.max_cpus and args.slurm_cpus > part.max_cpus:
        raise LaunchError(f"--slurm-cpus {args.slurm_cpus}: the nodes of {where} have at most {part.max_cpus} CPUs; "
                          f"give --slurm-cpus {part.max_cpus} or fewer")
    if part.max_time_min is not None and args.slurm_time > part.max_time_min:
        raise LaunchError(f"--slurm-time {args.slurm_time}: {where} allows at most {part.max_time_min} minutes; "
                          "give less (longer training is requeued and resumes on its own)")


def slurm_executor(args, folder: Path):
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=MAX_TIMEOUT_REQUEUES)
    params = dict(name="avatar", timeout_min=args.slurm_time, nodes=1, tasks_per_node=1,
                  cpus_per_task=args.slurm_cpus, slurm_signal_delay_s=SIGNAL_DELAY_S,
                  slurm_additional_parameters={"requeue": True})
    if gpus_per_job(args):  # no GPU request at all otherwise: clusters without GPU gres refuse even 0
        params["gpus_per_node"] = gpus_per_job(args)
    for key in ("partition", "account", "qos"):
        if getattr(args, f"slurm_{key}"):
            params[f"slurm_{key}"] = getattr(args, f"slurm_{key}")
    if args.gpus:
        params["slurm_array_parallelism"] = args.gpus
    executor.update_parameters(**params)
    return executor


def link_submitit_logs(job: SubjectJob, sub) -> None:
    """Put links to submitit's log files of this job beside the subject's other logs."""
    job.log_dir.mkdir(parents=True, exist_ok=True)
    for target in (sub.paths.stdout, sub.paths.stderr):
        link = job.log_dir / target.name
        if not link.is_symlink():
            link.symlink_to(target)


def sbatch_message(exc: Exception) -> str:
    """sbatch's own words from a failed submission (submitit wraps them in a long message)."""
    text = "\n".join(str(part) for part in (getattr(exc, "stderr", None), getattr(exc, "output", None), exc) if part)
    lines = [line.strip() for line in text.splitlines() if "sbatch: error:" in line]
    if lines:
        return "; ".join(dict.fromkeys(line.split("sbatch: error:", 1)[1].strip() for line in lines))
    last = [line.strip() for line in text.splitlines() if line.strip()]
    return last[-1] if last else type(exc).__name__


def submit_slurm(jobs: list[SubjectJob], args, root: Path, record: dict) -> list:
    """Submit the jobs as one SLURM job array; record the job ids and link each job's logs."""
    folder = root / "slurm"
    executor = slurm_executor(args, folder)
    try:
        # submitit prints a refused sbatch's stderr before it raises: the one error line says it
        with contextlib.redirect_stderr(io.StringIO()):
            subs = executor.submit_array(jobs)
    except Exception as exc:  # sbatch refused the array (submitit raises its own error types)
        raise LaunchError(f"sbatch refused the jobs: {sbatch_message(exc)}") from None
    for job, sub in zip(jobs, subs):
        record["subjects"][job.name].update(job_id=sub.job_id, submitit_folder=str(folder))
        link_submitit_logs(job, sub)
        print(f"[launch] {job.name}: SLURM job {sub.job_id}", flush=True)
    save_record(root, record)
    return subs


class SlurmWatcher:
    """Whether each job has ended, from submitit (its result file, ``sacct``) and, where accounting
    keeps no record (no accounting, or an array task cancelled before it started), ``squeue`` and
    ``scontrol``: a job none of them knows for :data:`UNKNOWN_GRACE_S` has ended. ``last_state``
    keeps the last state SLURM gave for each job (the outcome of a job that left no result).
    Prints a pending job's reason when it changes, with what to change where the reason means it
    will never start."""

    def __init__(self, jobs: list[SubjectJob], subs: list):
        self.jobs = {job.name: (job, sub) for job, sub in zip(jobs, subs)}
        self.unseen_since: dict[str, float] = {}
        self.reasons: dict[str, str | None] = {}
        self.last_state: dict[str, str] = {}

    def ended(self) -> list[str]:
        """Names of the jobs that have ended since the last call (each once)."""
        live = slurm.queue_states([sub.job_id for _, sub in self.jobs.values()])
        ended = []
        for name, (job, sub) in list(self.jobs.items()):
            queued = None if live is None else live.get(sub.job_id)
            if queued is not None:
                self.unseen_since.pop(name, None)
                self.last_state[name] = queued.state
                self._show_reason(name, queued)
            if sub.done() or (queued is None and self._gone(name, sub)):
                ended.append(name)
                del self.jobs[name]
        return ended

    def _gone(self, name: str, sub) -> bool:
        controller = slurm.controller_job(sub.job_id)
        if controller is not None:
            self.unseen_since.pop(name, None)
            state = slurm.JobState(controller.get("JobState", "UNKNOWN").upper(), None, "scontrol")
            self.last_state[name] = state.state
            return state.final
        if self.last_state.get(name) == "PENDING" and slurm.accounting_state(sub.job_id) is None:
            # A pending job leaves the queue only to run (then it is listed, or on record) or when
            # it is cancelled; SLURM keeps no record of an array task cancelled before it started.
            self.last_state[name] = "CANCELLED"
            return True
        first = self.unseen_since.setdefault(name, time.monotonic())
        return time.monotonic() - first > UNKNOWN_GRACE_S

    def _show_reason(self, name: str, state: slurm.JobState) -> None:
        reason = state.reason if state.state == "PENDING" else None
        if reason == self.reasons.get(name):
            return
        self.reasons[name] = reason
        if reason is None:
            return
        hint = slurm.HOPELESS_REASONS.get(reason.split(",")[0])
        print(f"[launch] {name}: pending ({reason})" + (f": it will not start as asked: {hint}" if hint else ""),
              flush=True)


def run_slurm(jobs: list[SubjectJob], args, root: Path, record: dict) -> dict[str, tuple[str, str]]:
    """Submit one job array and wait until every job has ended (requeues included)."""
    subs = submit_slurm(jobs, args, root, record)
    print(f"[launch] submitted a job array of {len(jobs)}; waiting for it (Ctrl-C stops waiting, not the jobs; "
          f"python launch.py --status --output-root {root} shows them)", flush=True)
    progress = ProgressWatcher(jobs)
    watcher = SlurmWatcher(jobs, subs)
    by_name = {job.name: (job, sub) for job, sub in zip(jobs, subs)}
    outcomes: dict[str, tuple[str, str]] = {}
    while len(outcomes) < len(jobs):
        progress.print_changes()
        for name in watcher.ended():
            outcomes[name] = job_outcome(*by_name[name], scheduler_state=watcher.last_state.get(name))
        if len(outcomes) < len(jobs):
            time.sleep(args.poll)
    progress.print_changes()
    return outcomes


# -- waiting, outcomes, the final table ---------------------------------------------------------

class ProgressWatcher:
    """Prints each job's progress.json when it changes."""

    def __init__(self, jobs: list[SubjectJob]):
        self.jobs = jobs
        self.seen: dict[str, tuple] = {j.name: self._key(j) for j in jobs}  # ignore an earlier launch's file

    @staticmethod
    def _key(job: SubjectJob) -> tuple:
        p = read_json(job.log_dir / "progress.json") or {}
        return p.get("time"), p.get("state"), p.get("message")

    def print_changes(self) -> None:
        for job in self.jobs:
            key = self._key(job)
            if key != self.seen[job.name] and key[1] is not None:
                self.seen[job.name] = key
                print(f"[launch] {job.name}: {key[1]}: {key[2]}", flush=True)


def job_outcome(job: SubjectJob, sub, scheduler_state: str | None = None) -> tuple[str, str]:
    """(``done`` | ``failed`` | ``cancelled``, one line) for a job that has ended.

    ``scheduler_state``: the last state the launcher saw SLURM give the job, for a job that ended
    without a result file (sacct keeps no record of an array task cancelled before it started)."""
    error = None
    if sub.paths.result_pickle.exists():  # submitit's result() would wait for one forever otherwise
        try:
            sub.result()
            return "done", "done"
        except Exception as exc:
            error = exc
    progress = read_json(job.log_dir / "progress.json") or {}
    if progress.get("job_id") == sub.job_id and progress.get("state") in ("failed", "cancelled"):
        return progress["state"], progress["message"]  # the job's own report says best what went wrong
    if scheduler_state not in slurm.FINAL_STATES and isinstance(sub, submitit.SlurmJob):
        recorded = slurm.accounting_state(sub.job_id)  # what the launcher saw last comes first: sacct
        scheduler_state = recorded.state if recorded is not None else scheduler_state  # may lag a requeue
    if scheduler_state == "CANCELLED":
        return "cancelled", "cancelled (scancel) before it started"
    if error is not None:
        last = [line for line in str(error).splitlines() if line.strip()]
        return "failed", f"{last[-1] if last else type(error).__name__} (logs: {job.log_dir})"
    return "failed", (f"ended without a result (scheduler state: {scheduler_state or 'unknown'}; "
                      f"logs: {job.log_dir})")


def final_table(root: Path, outputs: list[str], evaluate_args: list[str]) -> int:
    out = root / "results_all.json"
    print(f"[launch] evaluating {len(outputs)} subject(s) together -> {out}", flush=True)
    cmd = [sys.executable, str(REPO / "evaluate.py"), "-m", *outputs, "--out", str(out), *evaluate_args]
    return subprocess.run(cmd).returncode


def launch(args) -> int:
    root = Path(args.output_root).expanduser().absolute()
    if args.launcher is None:
        raise LaunchError("--launcher local|slurm is required")
    # Everything that would fail inside a job, after its training, is checked before any job runs.
    jobs = make_jobs(args, root)
    if jobs:
        check_train_config(jobs[0])
    if args.launcher == "slurm":
        check_slurm_available()
        check_slurm_request(args)
    check_lpips_weights(args)
    root.mkdir(parents=True, exist_ok=True)
    record = launch_record(args, root, jobs)
    save_record(root, record)
    start = time.time()
    outcomes = (run_slurm if args.launcher == "slurm" else run_local)(jobs, args, root, record)
    for name, (state, message) in outcomes.items():
        record["subjects"][name]["outcome"] = "done" if state == "done" else f"{state}: {message}"
    save_record(root, record)
    for name, (state, message) in outcomes.items():
        if state != "done":
            print(f"[launch] {name} {state}: {message}", file=sys.stderr, flush=True)
    done = [job.output for job in jobs if outcomes.get(job.name, ("failed",))[0] == "done"]
    table_code = final_table(root, done, evaluate_arguments(args)) if done else 1
    print(f"[launch] {len(done)} of {len(jobs)} subject(s) done in {time.time() - start:.0f} s "
          f"(outputs under {root}/)", flush=True)
    return 0 if len(done) == len(jobs) and table_code == 0 else 1


# -- --status -----------------------------------------------------------------------------------

def scheduler_state(record: dict, entry: dict) -> str:
    """What the scheduler says about a job: SLURM's state, or whether the local job still runs."""
    job_id = entry.get("job_id")
    if job_id is None:
        return "not started"
    if record["launcher"] == "slurm":
        try:
            return submitit.SlurmJob(folder=entry["submitit_folder"], job_id=job_id).state
        except Exception as exc:
            return f"unknown ({type(exc).__name__})"
    if record.get("host") != socket.gethostname():
        return f"on {record.get('host')}"
    try:
        os.kill(int(job_id), 0)
        return "RUNNING"
    except (ProcessLookupError, ValueError):
        return "ENDED"
    except PermissionError:
        return "RUNNING"


def subject_status(record: dict, entry: dict) -> tuple[str, str, str]:
    """(job id, state, detail) of one subject of the launch."""
    progress = read_json(Path(entry["output"]) / "slurm" / "progress.json") or {}
    sched = scheduler_state(record, entry)
    job_id = entry.get("job_id") or "-"
    if progress.get("job_id") != entry.get("job_id") or not progress:
        return job_id, "pending" if sched != "ENDED" else "ended without starting", sched
    state = progress["state"]
    if state in ("running", "requeued") and sched == "ENDED":
        state = "stopped"
    return job_id, state, f"{progress['message']} [{sched}, {progress['time']}]"


def show_status(args) -> int:
    root = Path(args.output_root).expanduser().absolute()
    record = read_json(root / "launch.json")
    if record is None:
        raise LaunchError(f"no launch recorded in {root} (launch.json not found); give --output-root")
    print(f"launch of {record['started']} on {record['host']} ({record['launcher']}), "
          f"{len(record['subjects'])} subject(s), outputs in {root}")
    rows = [(name, *subject_status(record, entry)) for name, entry in record["subjects"].items()]
    widths = [max(len(str(r[k])) for r in rows + [("subject", "job", "state", "")]) for k in range(3)]
    print(f"{'subject':<{widths[0]}}  {'job':<{widths[1]}}  {'state':<{widths[2]}}  detail")
    for name, job_id, state, detail in rows:
        print(f"{name:<{widths[0]}}  {job_id:<{widths[1]}}  {state:<{widths[2]}}  {detail}")
    table = root / "results_all.json"
    if table.is_file():
        print(f"table over all subjects: {table}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return show_status(args) if args.status else launch(args)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\n[launch] interrupted: local jobs saved their state (train.py exit 130) and SLURM jobs keep "
              "running; launch the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
