"""The run box: the engine that drives the pools, the run directory, progress and reports."""
