"""The workdir and the stage drivers: the only code that reads or writes a workdir.

:mod:`.workdir` owns every file name and record; the drivers run the domain functions over a
cohort, one stage each, resumably: :mod:`.scans` (chapter 1), :mod:`.masks` (2),
:mod:`.datasets` (projections and datasets, 3) and :mod:`.models` (4-7).
"""
