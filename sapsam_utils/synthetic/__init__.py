"""The embedded default cohort: CPA phantoms with their truth (:mod:`.phantom`), the cohort
simulator (:mod:`.cohort`) and its calibration (:mod:`.calibration`), and realism measures
(:mod:`.realism`)."""
