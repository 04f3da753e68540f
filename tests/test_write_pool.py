"""utils/write_pool.py and the atomic PNG write: jobs run off the main thread with a bounded
backlog, a job's error reaches the main thread once and as it was raised, and the pooled PNGs are
byte for byte those of a plain write."""
import threading
import time

import numpy as np
import pytest

from utils.errors import InputFileError
from utils.image_io import write_png
from utils.write_pool import WritePool


def test_jobs_run_on_worker_threads_and_all_finish_by_close():
    seen, lock = [], threading.Lock()

    def job(i):
        with lock:
            seen.append((i, threading.current_thread().name))

    with WritePool(workers=3) as pool:
        for i in range(50):
            pool.submit(job, i)
    assert sorted(i for i, _ in seen) == list(range(50))
    assert all(name.startswith("write-pool-") for _, name in seen)


def test_zero_workers_run_each_job_inline():
    seen = []
    pool = WritePool(workers=0)
    pool.submit(lambda: seen.append(threading.current_thread().name))
    assert seen == [threading.current_thread().name]  # done before submit returned
    pool.close()


def test_the_backlog_is_bounded_submit_waits():
    release = threading.Event()
    pool = WritePool(workers=1, backlog=2)
    pool.submit(release.wait)          # taken by the worker, which blocks on it
    time.sleep(0.1)
    pool.submit(lambda: None)          # queued: 1 of 2
    pool.submit(lambda: None)          # queued: 2 of 2
    returned = threading.Event()
    submitter = threading.Thread(target=lambda: (pool.submit(lambda: None), returned.set()))
    submitter.start()
    assert not returned.wait(0.3), "submit did not wait with a full backlog"
    release.set()
    assert returned.wait(5)
    submitter.join()
    pool.close()


def test_a_job_error_surfaces_once_as_raised_and_later_jobs_are_dropped():
    ran = []

    def bad():
        raise InputFileError("gt/x.png: image data is corrupt")

    pool = WritePool(workers=1, backlog=100)
    pool.submit(bad)
    time.sleep(0.2)  # the worker has failed by now
    with pytest.raises(InputFileError, match="corrupt"):
        pool.submit(ran.append, 1)
    pool.close()  # raised once already: not again
    assert ran == []

    pool = WritePool(workers=1, backlog=100)
    gate = threading.Event()
    pool.submit(lambda: (gate.wait(), bad()))
    for i in range(5):
        pool.submit(ran.append, i)  # queued behind the failing job
    gate.set()
    with pytest.raises(InputFileError):
        pool.close()
    assert ran == []


def test_leaving_on_an_error_of_the_main_thread_writes_what_is_queued_but_not_on_ctrl_c():
    for exc, expect in ((RuntimeError, list(range(5))), (KeyboardInterrupt, [])):
        ran, gate = [], threading.Event()
        with pytest.raises(exc):
            with WritePool(workers=1, backlog=10) as pool:
                pool.submit(gate.wait)
                for i in range(5):
                    pool.submit(ran.append, i)
                gate.set() if exc is RuntimeError else None
                threading.Timer(0.2, gate.set).start()
                raise exc()
        assert ran == expect, exc


@pytest.mark.parametrize("shape", [(40, 30, 3), (40, 30, 1), (40, 30)])
def test_atomic_png_has_the_bytes_of_the_plain_write_and_leaves_no_temporary(tmp_path, shape):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    write_png(tmp_path / "plain.png", image)
    write_png(tmp_path / "sub" / "atomic.png", image, atomic=True)
    assert (tmp_path / "sub" / "atomic.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["atomic.png"]
