"""The manual's generated reference pages: every config key described, the pages current."""

from pathlib import Path

import pytest

from ssenet.choices import CHOICE_KEYS
from ssenet.config import Config
from ssenet.reference import (
    PAGES,
    cli_reference,
    config_keys,
    config_reference,
    field_docstrings,
    main,
    undocumented_keys,
)

DOCS = Path(__file__).parents[1] / "docs"


def test_every_config_key_has_a_description():
    # A new key needs a docstring under its field in ssenet/config.py: the reference shows it.
    assert undocumented_keys() == []


def test_a_key_without_a_docstring_is_found():
    from dataclasses import dataclass

    @dataclass
    class Section:
        described: int = 1
        """What it means."""
        bare: int = 2  # a comment is not a description

    assert field_docstrings(Section) == {"described": "What it means."}


def test_a_field_keeps_its_base_docstring_unless_it_writes_its_own():
    # The training sections share their optimiser fields through a base dataclass.
    from dataclasses import dataclass

    @dataclass
    class Base:
        kept: int = 1
        """The base's meaning."""
        replaced: int = 2
        """The base's other meaning."""

    @dataclass
    class Section(Base):
        kept: int = 3  # a new default only
        replaced: int = 4
        """The section's own meaning."""
        own: int = 5
        """Only the section's."""

    assert field_docstrings(Section) == {
        "kept": "The base's meaning.",
        "replaced": "The section's own meaning.",
        "own": "Only the section's.",
    }


def test_the_reference_lists_every_key_its_default_and_allowed_values():
    keys = config_keys()
    assert len(keys) == sum(len(section) for section in Config().to_dict().values())
    page = config_reference()
    for key in keys:
        assert f"| `{key.section}.{key.key}` |" in page
    by_name = {f"{k.section}.{k.key}": k for k in keys}
    for name, allowed in CHOICE_KEYS.items():
        assert by_name[name].allowed == ", ".join(f"`{v}`" for v in allowed)
    assert by_name["aff.radius"].allowed == "at least 2, at most 24"
    assert by_name["cam.lr_multipliers"].default == "`[1.0, 2.0, 10.0, 20.0]`"
    assert by_name["cam.lr_multipliers"].type == "list of 4 numbers"
    assert by_name["aff.resize_long"].type == "list of 2 integers or null"
    assert by_name["data.label_file"].default == "`null`"


def test_the_cli_reference_has_every_verb_and_option():
    from ssenet.cli import build_parser

    page = cli_reference()
    parser = build_parser()
    verbs = next(a for a in parser._actions if a.dest == "command").choices
    for name, verb in verbs.items():
        assert f"## `ssenet {name}`" in page
        for action in verb._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help", "--no-progress"):
                    assert f"`{option}`" in page, (name, option)
    assert "## `ssenet config show`" in page


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_committed_pages_are_the_generated_ones(page):
    generated = {"configuration.md": config_reference, "cli.md": cli_reference}[page]()
    assert (DOCS / page).read_text() == generated + "\n", (
        f"docs/{page} is out of date: run python -m ssenet.reference docs"
    )


def test_check_mode_reports_a_stale_page(tmp_path, capsys):
    assert main([str(tmp_path), "--check"]) == 1
    assert "out of date" in capsys.readouterr().out
    assert main([str(tmp_path)]) == 0 and main([str(tmp_path), "--check"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PAGES)
