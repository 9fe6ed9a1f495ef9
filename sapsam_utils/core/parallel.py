"""Per-scan work of a cohort, in parallel processes with a progress bar."""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator, Sequence

from tqdm.auto import tqdm


class WorkerDied(RuntimeError):
    """A worker process ended without finishing its job (killed, out of memory, crashed).

    The message names the jobs that were running then (one of them killed the worker).
    """


def map_jobs(
    func: Callable, jobs: Sequence[tuple], n_jobs: int = 1, desc: str = "scans", progress: bool = True,
    name: Callable[[tuple], str] | None = None,
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
        Label of the tqdm progress bar, and what the jobs are in error messages.
    progress : bool
        Show the progress bar.
    name : callable, optional
        A job's name in error messages (default: its first argument, e.g. the scan_id).

    Raises
    ------
    Exception
        The first job's error; jobs not yet started are cancelled. Callers write each job's
        output atomically, so what finished before stays complete and a rerun resumes.
    WorkerDied
        When a worker process dies (killed by a signal or the out-of-memory killer, a crash in
        native code): names the jobs that were running, one of which killed it.
    """
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    name = name or (lambda job: str(job[0]))
    with tqdm(total=len(jobs), desc=desc, unit="scan", disable=not progress or not jobs) as bar:
        if n_jobs == 1 or len(jobs) <= 1:
            for job in jobs:
                yield job, func(*job)
                bar.update()
            return
        workers = min(n_jobs, len(jobs))
        queue = iter(enumerate(jobs))
        # At most one job per worker is submitted at a time, so that the jobs running when a
        # worker dies are known (a pool that breaks fails every job it holds).
        running: dict = {}

        def submit_next() -> None:
            item = next(queue, None)
            if item is not None:
                running[pool.submit(func, *item[1])] = item

        current = None
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            try:
                for _ in range(workers):
                    submit_next()
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in sorted(done, key=lambda f: running[f][0]):
                        current = running.pop(future)[1]
                        result = future.result()
                        submit_next()
                        yield current, result
                        current = None
                        bar.update()
            except BrokenProcessPool as err:
                lost = ([current] if current is not None else []) + [job for _, job in running.values()]
                names = ", ".join(name(job) for job in lost)
                raise WorkerDied(
                    f"a worker process died (killed, out of memory or crashed) while running {desc} {names}"
                    f"{' (one of them killed it)' if len(lost) > 1 else ''}; what finished before is kept: "
                    "run again to resume"
                ) from err
            except BaseException:
                for future in running:
                    future.cancel()
                raise
