"""Per-scan work of a cohort, in parallel processes with a progress bar.

Two engines run the jobs, chosen by ``scheduler``:

``"processes"`` (the default)
    A pool of local worker processes; needs nothing beyond the standard library.
``"dask"``, or a scheduler's address (``"tcp://host:8786"``)
    `dask.distributed`_: a local cluster of ``n_jobs`` worker processes, or the workers of a running
    scheduler (``dask scheduler`` on one machine, ``dask worker ADDRESS --nthreads 1`` on each other).
    Every worker must read and write the same paths (a shared file system), since jobs read their
    inputs from and write their outputs to the workdir. A worker that dies has its job retried on
    another (Dask's ``allowed-failures``); a job that keeps killing workers raises
    :class:`WorkerDied`.

Either way a job's outputs are written atomically by the job itself, so what finished is kept
when another job fails, and a rerun resumes.

.. _dask.distributed: https://distributed.dask.org
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from tqdm.auto import tqdm

#: The local engines (any other value is a Dask scheduler's address).
SCHEDULERS = ("processes", "dask")
#: Environment of a local Dask worker: one thread for each numerical library, so that the
#: workers together use the cores once (each worker gets SimpleITK threads of its own share).
_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


class WorkerDied(RuntimeError):
    """A worker process ended without finishing its job (killed, out of memory, crashed).

    The message names the jobs that were running then (one of them killed the worker).
    """


def map_jobs(
    func: Callable, jobs: Sequence[tuple], n_jobs: int = 1, desc: str = "scans", progress: bool = True,
    name: Callable[[tuple], str] | None = None, scheduler: str = "processes",
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
    scheduler : str
        ``"processes"`` (local processes), ``"dask"`` (a local Dask cluster of ``n_jobs``
        workers) or the address of a running Dask scheduler (see the module docstring).

    Raises
    ------
    Exception
        The first job's error; jobs not yet started are cancelled. Callers write each job's
        output atomically, so what finished before stays complete and a rerun resumes.
    WorkerDied
        When a worker process dies (killed by a signal or the out-of-memory killer, a crash in
        native code): names the jobs that were running, one of which killed it. Under Dask: a
        job that killed more workers than Dask allows.
    """
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    check_scheduler(scheduler)
    name = name or (lambda job: str(job[0]))
    with tqdm(total=len(jobs), desc=desc, unit="scan", disable=not progress or not jobs) as bar:
        if scheduler != "processes" and jobs:
            yield from _dask_jobs(func, jobs, n_jobs, scheduler, bar, desc, name)
            return
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


def check_scheduler(scheduler: str) -> None:
    """Refuse a ``scheduler`` that is neither a local engine nor a Dask address, and Dask when
    it is not installed, saying what to do."""
    if scheduler in SCHEDULERS[:1]:
        return
    if scheduler not in SCHEDULERS and "://" not in scheduler:
        raise ValueError(f"scheduler must be one of {SCHEDULERS} or a Dask scheduler's address "
                         f"(tcp://host:port), got {scheduler!r}")
    try:
        import distributed  # noqa: F401
    except ImportError as err:
        raise ImportError(f"scheduler {scheduler!r} needs dask.distributed: pip install dask distributed "
                          "(pinned in pyproject.toml)") from err


class _SharingCores:
    """A job run in a Dask worker with the worker's share of its machine's cores for SimpleITK and
    the BLAS / OpenMP pools (set before each job, so a restarted worker gets it too)."""

    def __init__(self, func: Callable, workers_per_host: dict[str, int]):
        self.func, self.workers_per_host = func, workers_per_host

    def __call__(self, *job):
        import SimpleITK as sitk
        from distributed import get_worker
        from threadpoolctl import threadpool_limits

        host = get_worker().address.rsplit(":", 1)[0]
        threads = max(1, (os.cpu_count() or 1) // self.workers_per_host.get(host, 1))
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        with threadpool_limits(threads):
            return self.func(*job)


@contextmanager
def _dask_client(scheduler: str, n_jobs: int):
    from distributed import Client, LocalCluster

    if scheduler == "dask":
        cluster = LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True, dashboard_address=":0",
                               env=_ONE_THREAD)
        with cluster, Client(cluster) as client:
            yield client
    else:
        with Client(scheduler) as client:
            yield client


def _dask_jobs(func, jobs, n_jobs, scheduler, bar, desc, name):
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    with _dask_client(scheduler, n_jobs) as client:
        hosts = [address.rsplit(":", 1)[0] for address in client.scheduler_info()["workers"]]
        task = _SharingCores(func, {host: hosts.count(host) for host in hosts})
        futures = {client.submit(task, *job, key=f"{desc}-{i}-{name(job)}", pure=False): job
                   for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                job = futures[future]
                try:
                    result = future.result()
                except KilledWorker as err:
                    raise WorkerDied(
                        f"{desc} {name(job)}: the Dask workers running it died (killed, out of memory or crashed) "
                        "more often than Dask retries a job; what finished before is kept: run again to resume"
                    ) from err
                yield job, result
                bar.update()
        finally:
            client.cancel(list(futures))
