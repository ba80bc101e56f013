"""Fuzz: whatever a user writes in the config, bpfree answers with one BpfreeError line or
accepts it; never a traceback (KeyError, TypeError, ...)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfree.config import early_stopping_from_mapping, measurement_from_mapping
from bpfree.errors import BpfreeError
from bpfree.tuning import tuning_settings_from_mapping
from bpfree.workflow import check_config, expand_runs, expand_studies

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_any_config_is_accepted_or_refused_in_one_line(config):
    try:
        check_config(config, SCHEMA)
        expand_runs(config)
        expand_studies(config)
        early_stopping_from_mapping(config.get("early_stopping"))
        measurement_from_mapping(config.get("measurement"))
        tuning_settings_from_mapping(config.get("tuning"))
    except BpfreeError as err:
        message = str(err)
        assert message and "\n" not in message
