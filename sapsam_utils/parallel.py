"""Per-scan work of a cohort, in parallel processes with a progress bar."""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterator, Sequence

from tqdm.auto import tqdm


def map_jobs(
    func: Callable, jobs: Sequence[tuple], n_jobs: int = 1, desc: str = "scans", progress: bool = True
) -> Iterator[tuple[tuple, object]]:
    """Run ``func(*job)`` for every job and yield ``(job, result)`` as each one finishes.

    Parameters
    ----------
    func : callable
        A module-level function (the workers are fresh "spawn" interpreters, which is safe beside
        the threads of a notebook kernel and of SimpleITK).
    jobs : sequence of tuple
        The positional arguments of each call.
    n_jobs : int
        Worker processes; 1 runs in this process.
    desc : str
        Label of the tqdm progress bar.
    progress : bool
        Show the progress bar.

    Raises
    ------
    Exception
        The first job's error; jobs not yet started are cancelled. Callers write each job's
        output atomically, so what finished before stays complete and a rerun resumes.
    """
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    with tqdm(total=len(jobs), desc=desc, unit="scan", disable=not progress or not jobs) as bar:
        if n_jobs == 1 or len(jobs) <= 1:
            for job in jobs:
                yield job, func(*job)
                bar.update()
            return
        workers = min(n_jobs, len(jobs))
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(func, *job): job for job in jobs}
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
                    bar.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
