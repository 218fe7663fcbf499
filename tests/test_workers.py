"""emis.workers: jobs in worker processes give what they give in this one, and log where this process logs."""

import logging
import os

import pytest

from emis.workers import run_jobs


def _double_and_log(x: int) -> tuple[int, int]:
    logging.getLogger("emis.test_workers").info("job %d ran in pid %d", x, os.getpid())
    return 2 * x, os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_every_job_runs_once_and_logs_to_this_processs_log_file(tmp_path, workers):
    path = tmp_path / "job.log"
    handler = logging.FileHandler(path)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        out = run_jobs(_double_and_log, {"a": (1,), "b": (2,), "c": (3,)}, workers, "test")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
    assert list(out) == ["a", "b", "c"] and [v[0] for v in out.values()] == [2, 4, 6]
    pids = {v[1] for v in out.values()}
    assert pids == {os.getpid()} if workers == 1 else (os.getpid() not in pids and 1 <= len(pids) <= 2)
    text = path.read_text()
    assert all(f"job {x} ran in pid {out[k][1]}" in text for k, x in zip("abc", (1, 2, 3))), text
