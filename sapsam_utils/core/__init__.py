"""What every step of the study shares: volumes, sub-regions, atomic files, results with their
intervals, the paper's numbers, paths and worker processes."""
