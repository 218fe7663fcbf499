"""Independent jobs in parallel worker processes that share the machine's cores (the organism build's families,
the replication's models): small models use one core far better than two, so one job per core cuts wall time."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 1.0
LOG_FORMAT = "[%(asctime)s][%(processName)s][%(name)s][%(levelname)s] - %(message)s"


def _watch_parent(parent: int) -> None:
    """Exit this process as soon as its parent `parent` is gone (it has then been re-parented)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _die_with_parent(parent: int) -> None:
    """Pool initializer: a worker dies with the process that started it, so a `kill -9` of it leaves no worker running.

    Linux: PR_SET_PDEATHSIG (SIGKILL once the thread that started the worker ends); everywhere, and for a parent
    killed before this ran or a worker started by a thread that since ended: a thread polling the parent's pid."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _log_files() -> list[str]:
    """The files this process logs to (a Hydra job's `<name>.log`): its workers append their records there too."""
    return [h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def _in_worker(threads: int, log_files: list[str], run: Callable[..., Any], *args: Any) -> Any:
    """`run(*args)` in a worker process limited to `threads` torch threads, logging to stderr and to `log_files`."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    for path in log_files:
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(handler)
    torch.set_num_threads(threads)
    return run(*args)


def run_jobs(run: Callable[..., Any], jobs: Mapping[str, Sequence[Any]], workers: int, desc: str) -> dict[str, Any]:
    """`run(*job)` for every job, keyed as `jobs`: in this process one after the other when `workers` <= 1, else in
    `workers` spawned processes that split this process's torch threads and die with it. `run` and the jobs' arguments
    must pickle (a module-level function; configs resolved). The workers' log records also go to this process's log
    files, so a Hydra job's log holds every stage's lines."""
    workers = min(int(workers), len(jobs))
    if workers <= 1:
        return {name: run(*job) for name, job in tqdm(jobs.items(), desc=desc)}
    threads, log_files = max(1, torch.get_num_threads() // workers), _log_files()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = {name: pool.submit(_in_worker, threads, log_files, run, *job) for name, job in jobs.items()}
        return {name: fut.result() for name, fut in futures.items()}
