"""Where a grid stands, torch-free: what a workflow config plans (``grid``: its studies and runs,
expanded once for the Snakefile, ``bpfree plan``, ``bpfree tune``'s per-study settings and
``bpfree status``), what a trial cost (``trials``), whether a trial's worker is gone
(``workers``) and the grid's typed status read from its results folder (``status``).

Imports only :mod:`bpfree.core`; optuna and psutil only where a journal or a worker is read."""
