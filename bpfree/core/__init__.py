"""Tier 0, the base: the run specification and its checks (``spec``), the record of a run
(``record``), result paths (``outputs``), bounded readers and atomic writers (``io``), the
registries, the paper's hyperparameters and claims as data. Imports nothing of bpfree above it
and no torch: the workflow plans and the tables read with it alone."""
