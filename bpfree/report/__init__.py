"""Tier 4, after the runs: the tables (``tables``, one registry ``TABLES``), the figures
(``figures``, ``FIGURES``), the paper's claims tested (``claims``), the cost of a study. Reads
run records and trial tables only: no torch. Imports core (and measure's torch-free parts)."""
