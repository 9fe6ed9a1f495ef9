"""The per-scan process pool: every result once, errors surface with the job that failed."""

import os

import pytest

from sapsam_utils.core.parallel import WorkerDied, map_jobs


def square_or_fail(x):
    if x == 3:
        raise ValueError(f"scan {x} is broken")
    return x * x


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_every_job_yields_its_own_result(n_jobs):
    jobs = [(x,) for x in (0, 1, 2, 4, 5)]
    results = dict(map_jobs(square_or_fail, jobs, n_jobs=n_jobs, progress=False))
    assert results == {(x,): x * x for x in (0, 1, 2, 4, 5)}


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_the_first_error_is_raised(n_jobs):
    with pytest.raises(ValueError, match="scan 3 is broken"):
        list(map_jobs(square_or_fail, [(x,) for x in range(6)], n_jobs=n_jobs, progress=False))


def test_n_jobs_must_be_positive():
    with pytest.raises(ValueError, match="n_jobs"):
        list(map_jobs(square_or_fail, [(1,)], n_jobs=0))


def die_on_three(x):
    if x == 3:
        os._exit(1)  # a crash in native code, or the out-of-memory killer
    return x * x


def sitk_threads(_):
    import SimpleITK as sitk

    return sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()


@pytest.fixture(scope="module")
def dask_scheduler():
    """A local Dask scheduler with 2 worker processes, one job at a time each, that gives a job up
    after one lost worker (so the job whose worker died is the one that killed it)."""
    distributed = pytest.importorskip("distributed")
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.scheduler.worker-saturation": 1.0}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster:
            yield cluster.scheduler_address


def test_dask_gives_every_result_of_the_process_pool(dask_scheduler):
    jobs = [(x,) for x in (0, 1, 2, 4, 5)]
    assert dict(map_jobs(square_or_fail, jobs, n_jobs=2, progress=False, scheduler=dask_scheduler)) == \
        dict(map_jobs(square_or_fail, jobs, n_jobs=2, progress=False))


def test_dask_raises_the_jobs_own_error(dask_scheduler):
    with pytest.raises(ValueError, match="scan 3 is broken"):
        list(map_jobs(square_or_fail, [(x,) for x in range(6)], n_jobs=2, progress=False, scheduler=dask_scheduler))


def test_dask_names_the_job_that_killed_its_worker(dask_scheduler):
    with pytest.raises(WorkerDied, match="scans 3: the Dask workers running it died"):
        list(map_jobs(die_on_three, [(x,) for x in range(5)], n_jobs=2, progress=False, scheduler=dask_scheduler))


def test_dask_workers_share_the_cores(dask_scheduler):
    import distributed

    with distributed.Client(dask_scheduler) as client:
        client.wait_for_workers(2, timeout=60)  # a worker killed by the test above restarts
    threads = dict(map_jobs(sitk_threads, [(x,) for x in range(4)], n_jobs=2, progress=False,
                            scheduler=dask_scheduler))
    assert set(threads.values()) == {max(1, (os.cpu_count() or 1) // 2)}


def test_an_unknown_scheduler_is_refused():
    with pytest.raises(ValueError, match="scheduler must be one of"):
        list(map_jobs(square_or_fail, [(1,)], scheduler="slurm"))


def test_a_local_dask_cluster_of_n_jobs_workers():
    pytest.importorskip("distributed")
    jobs = [(x,) for x in (0, 1, 2)]
    assert dict(map_jobs(square_or_fail, jobs, n_jobs=2, progress=False, scheduler="dask")) == {(x,): x * x for x in (0, 1, 2)}
