"""The image half of the method, on arrays and volumes: lung masks (:mod:`.segmentation`), overlap
metrics (:mod:`.metrics`), windowed projections (:mod:`.projections`) and rotations and 2-D
augmentation (:mod:`.augment`)."""
