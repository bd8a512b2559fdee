"""docs/metrics.md and docs/cli.md are the catalogue's and the CLI's own description."""

from __future__ import annotations

import re

import click

from alerting.metric_names import CATALOGUE
from driftline import cli_reference, metrics_reference
from driftline.cli import main
from tests.conftest import REPO


def test_metrics_reference_lists_every_catalogued_metric() -> None:
    text = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    documented = re.findall(r"^\| `(driftline_[a-z0-9_]+)` \|", text, flags=re.MULTILINE)
    assert sorted(documented) == sorted(metric.name for metric in CATALOGUE), (
        "run `python -m driftline.metrics_reference --write docs/metrics.md`"
    )
    assert text == metrics_reference.render()


def test_cli_reference_documents_every_command_and_option() -> None:
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    hint = "run `python -m driftline.cli_reference --write docs/cli.md`"
    for name, command in main.commands.items():
        subcommands = command.commands if isinstance(command, click.Group) else {"": command}
        for sub, leaf in subcommands.items():
            heading = " ".join(part for part in ("## driftline", name, sub) if part)
            assert heading in text, f"{heading!r} missing: {hint}"
            for param in leaf.params:
                if isinstance(param, click.Option):
                    assert f"`{param.opts[0]}`" in text, f"{heading} {param.opts[0]}: {hint}"
    assert text == cli_reference.render(), hint
