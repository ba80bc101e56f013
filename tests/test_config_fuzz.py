"""Fuzz: whatever a user writes in the config, bpfree answers with one BpfreeError line or
accepts it; never a traceback (KeyError, TypeError, ...)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bpfree.core.errors import BpfreeError
from bpfree.workflow.grid import check_config, expand_runs, expand_studies

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["mlp:8,8", "cnn:4,4", "bp", "ff", "digits", "val_loss"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def paths(config, prefix=()):
    """Every key path in the config (into mappings and lists)."""
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else []
    for key, value in items:
        yield (*prefix, key)
        yield from paths(value, (*prefix, key))


ALL_PATHS = list(paths(DEFAULT))


@st.composite
def mutated_configs(draw):
    config = copy.deepcopy(DEFAULT)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = config
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()):
                parent[path[-1]] = draw(values)
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(values)  # a misspelt key
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation replaced the parent
    return config


NEWLINE_KEY = {**DEFAULT, "tuning": {**DEFAULT["tuning"], "search_spaces": {"\n": {}}}}


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(NEWLINE_KEY)  # found by CI once: a key "\n" made the message two lines
@given(mutated_configs())
def test_any_config_is_accepted_or_refused_in_one_line(config):
    try:
        check_config(config)
        expand_runs(config)
        expand_studies(config)
    except BpfreeError as err:
        message = str(err)
        assert message and "\n" not in message


def test_a_newline_key_is_named_quoted_on_one_line():
    with pytest.raises(BpfreeError) as err:
        check_config(NEWLINE_KEY)
    assert "\n" not in str(err.value) and "'\\n'" in str(err.value)
