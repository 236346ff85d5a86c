"""The front door and the manual: a short README whose commands are CI's, links that resolve,
and every manual page in the site's navigation."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if not line.startswith("#")]


def test_the_readme_is_a_front_door():
    assert 100 <= len(README.splitlines()) <= 250
    demo, tests = readme_commands()
    assert demo.endswith("pip install . && ssenet demo")
    # CI runs the README's test command: the tests and the manual's strict build.
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = tests.split(" && ", 2)[2]  # after the virtual environment's two steps
    assert test_command.endswith("pytest && mkdocs build --strict")
    assert test_command in ci


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_every_manual_page_is_in_the_navigation():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(entries):
        for entry in entries:
            for value in entry.values():
                yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(nav))
    assert listed == {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"configuration.md", "cli.md", "api.md", "results.md", "reproducing.md"} <= listed


def test_the_test_extras_bring_the_manual_tools():
    pyproject = (ROOT / "pyproject.toml").read_text()
    test_extra = pyproject.split("test = [", 1)[1].split("]\n", 1)[0]
    for tool in ("mkdocs", "mkdocs-material", "mkdocstrings[python]"):
        assert f'"{tool}>=' in test_extra
