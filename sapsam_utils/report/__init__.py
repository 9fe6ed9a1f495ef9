"""The book: the notebook runner (:mod:`.runner`), provenance, the summary page and the figures
the chapters draw (:mod:`.plots`)."""
