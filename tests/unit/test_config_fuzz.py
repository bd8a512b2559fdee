"""Fuzzed configs: a complete Config, or a ConfigError naming the key; never anything else."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.config import Config, ConfigError, parse_config

SECTIONS = [
    "kafka",
    "redis",
    "topics",
    "windows",
    "consumer",
    "evaluator",
    "monitoring",
    "models",
    "typo_section",
]
KEYS = [
    "bootstrap_servers",
    "group_id",
    "url",
    "key_prefix",
    "events",
    "bucket_seconds",
    "rollup_seconds",
    "short_seconds",
    "long_seconds",
    "batch_size",
    "tick_seconds",
    "metrics_port",
    "max_series",
    "low_confidence_threshold",
    "features",
    "segments",
    "not_a_key",
]
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 100_000),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(
        st.text(max_size=5), st.sampled_from(["numeric", "categorical", "x"]), max_size=3
    ),
)
configs = st.dictionaries(
    st.sampled_from(SECTIONS),
    st.one_of(values, st.dictionaries(st.sampled_from(KEYS), values, max_size=4)),
    max_size=4,
)


@settings(max_examples=1500, deadline=None)
@given(configs)
def test_fuzzed_configs_are_complete_or_name_the_key(data: dict[str, object]) -> None:
    try:
        config = parse_config(data)
    except ConfigError as error:
        lines = str(error).splitlines()
        assert re.match(r"config: \d+ invalid setting", lines[0])
        for line in lines[1:]:
            key = line.strip().split(" = ", 1)[0]
            assert key.split(".")[0] in SECTIONS or key == "(top level)", line
            assert "\n" not in key and "\r" not in key
        return
    assert isinstance(config, Config)
    assert config.windows.long_seconds >= config.windows.short_seconds
