"""Helpers shared by the notebooks of the SAPSAM reproducible study.

The subpackages follow the pipeline, in the order the chapters use them:

``core``
    What every step shares: canonical volumes and NIfTI I/O (``volume``), the six sub-regions and
    four sign labels (``regions``), atomic file writes (``files``), a number with its interval
    (``results``), the paper's numbers (``paper``), the project's paths and worker processes.
``data``
    Reading a cohort: the manifest and its validator, DICOM / NIfTI loading, the public CT cases.
``synthetic``
    The embedded default cohort: CPA phantoms with voxel-exact truth, the cohort simulator and its
    calibration to the paper's Table 1, realism measures against real CT.
``imaging``
    The image half of the method, on arrays and volumes: lung segmentation, overlap metrics,
    windowed average-intensity projections, 3-D rotations and 2-D augmentation.
``learning``
    The learning half, on arrays and tables: classifiers, training, baselines, patient-level
    evaluation, sign labelling, Grad-CAM maps and two-year survival.
``stages``
    The only code that reads or writes the workdir: its file names and records (``workdir``) and
    the stage drivers that run the domain functions over a cohort (scans, masks, projections and
    datasets, models).
``report``
    The book: the notebook runner, provenance, the summary page, and every figure the chapters
    draw (``plots``).

Domain modules (``imaging``, ``learning``, ``synthetic``) never touch the workdir; notebooks
call them and the ``stages`` drivers, and hold the narrative, parameters and figures.
"""

__version__ = "0.1.0"
