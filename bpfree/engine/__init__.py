"""Tier 3, one run: resolving a spec, the training loop and its handlers (``loop``,
``stopping``), checkpoints, the measured run (``run``) and its outcome (``outcome``), the
hardware analysis, the plugins that fill the registries. Imports core, data, models,
algorithms and measure."""
