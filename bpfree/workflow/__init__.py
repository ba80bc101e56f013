"""Tier 5, many runs planned: the grid the Snakefile expands (``grid``) and ``bpfree plan``'s
forecast (``forecast``). Imports core, tuning and report; the Snakefile imports it."""
