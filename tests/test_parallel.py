"""The per-scan process pool: every result once, errors surface with the job that failed."""

import pytest

from sapsam_utils.core.parallel import map_jobs


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
