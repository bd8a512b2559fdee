"""docs/configuration.md documents every key of the pydantic config, and no other."""

from __future__ import annotations

import re

from driftline.config_reference import NOTES, config_keys, render
from tests.conftest import REPO

DOC = REPO / "docs" / "configuration.md"


def _documented() -> list[str]:
    return re.findall(r"^\| `([^`]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)


def test_every_config_key_is_documented_and_no_other() -> None:
    documented = _documented()
    keys = [key.path for key in config_keys()]
    assert len(documented) == len(set(documented)), "a key is documented twice"
    missing = sorted(set(keys) - set(documented))
    unknown = sorted(set(documented) - set(keys))
    hint = "run `python -m driftline.config_reference --write docs/configuration.md`"
    assert not missing, f"config keys missing from {DOC.name}: {missing}; {hint}"
    assert not unknown, f"{DOC.name} documents keys the config does not have: {unknown}; {hint}"
    assert DOC.read_text(encoding="utf-8") == render(), f"types or defaults changed: {hint}"


def test_reference_names_aliases_kinds_and_defaults_as_yaml_spells_them() -> None:
    keys = {key.path: key for key in config_keys()}
    assert keys["rules[].for"].default == "0.0"  # the alias, not for_seconds
    assert "rules[].for_seconds" not in keys
    assert keys["alerting.rollback.actions[type=redis_key].key"].default == (
        '"driftline:active-version:{model}"'
    )
    assert keys["models.<name>.labels.positive_classes"].type == "list of str"
    assert keys["rules[].name"].default == "required"
    assert keys["evaluator.metrics_port"].constraints == ">= 0, <= 65535"


def test_every_note_belongs_to_a_key() -> None:
    keys = {key.path for key in config_keys()}
    assert sorted(set(NOTES) - keys) == []
