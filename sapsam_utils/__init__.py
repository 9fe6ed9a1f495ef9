"""Helpers shared by the notebooks of the SAPSAM reproducible study.

Every algorithm of the study lives here once; the notebooks hold narrative, parameters, calls
and figures. Modules: :mod:`~sapsam_utils.volume` (canonical volumes and NIfTI I/O),
:mod:`~sapsam_utils.regions` (the six sub-regions and four sign labels),
:mod:`~sapsam_utils.cache` (the ``workdir`` layout and caching).
"""

__version__ = "0.1.0"
