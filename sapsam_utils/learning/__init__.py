"""The learning half, on arrays and tables: classifiers (:mod:`.models`), training
(:mod:`.training`), baselines, patient-level evaluation, sign labelling (:mod:`.signs`), Grad-CAM
(:mod:`.gradcam`) and two-year survival (:mod:`.survival`)."""
