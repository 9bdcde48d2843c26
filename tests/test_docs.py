"""What README.md and docs/*.md show of the code is what the code does now: the generated blocks (tools/
generate_docs.py, `make docs`) are regenerated here and compared with the committed documents."""

from __future__ import annotations

import dataclasses

import pytest

import generate_docs
from keeper_iam_rotator.settings import VARIABLES, Settings

STALE = "{path} is stale; run `make docs` and commit the result:\n{diff}"


def assert_current(blocks: dict[str, str]) -> None:
    stale = {path: pair for path, pair in generate_docs.regenerate(blocks).items() if pair[0] != pair[1]}
    message = "\n".join(STALE.format(path=path, diff=generate_docs.diff(path, *pair)) for path, pair in stale.items())
    assert not stale, message


def test_every_setting_is_one_documented_variable():
    fields = [variable.field for variable in VARIABLES if variable.field]
    assert sorted(fields) == sorted(field.name for field in dataclasses.fields(Settings))
    names = [variable.name for variable in VARIABLES]
    assert len(names) == len(set(names))
    assert set(generate_docs.template_environment()) <= set(names)  # the template sets nothing undocumented


def test_settings_are_read_through_the_table():
    env = {variable.name: "" for variable in VARIABLES} | {"ROTATION_CONCURRENCY": "7", "TARGET_ROLE_NAME": " r "}
    settings = Settings.from_env(env)
    assert (settings.concurrency, settings.target_role_name, settings.journal_table) == (7, "r", Settings.journal_table)


def test_the_environment_tables_are_generated_from_the_code():
    assert_current(generate_docs.generated(include_transcripts=False))


@pytest.mark.e2e
def test_the_transcripts_are_what_the_cli_and_the_demo_print_now():
    """Runs the documented session against a fresh `serve` and the demo (a minute or two)."""
    blocks = generate_docs.generated()
    documented = {name for doc in generate_docs.DOCS for name in generate_docs.block_names(doc.read_text())}
    assert {name for name in blocks if name.startswith("transcript ")} <= documented  # no step shown nowhere
    assert_current(blocks)
