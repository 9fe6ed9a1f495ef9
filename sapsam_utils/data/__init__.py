"""Reading a cohort: the manifest (:mod:`.manifest`), DICOM and NIfTI loading (:mod:`.loading`) and
the public CT cases (:mod:`.public_ct`)."""
