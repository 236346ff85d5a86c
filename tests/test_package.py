"""The top-level package: the public API by name, loaded lazily; `ssenet --version`."""

import subprocess
import sys

import pytest

import ssenet


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_import_ssenet_and_the_cli_parser_do_not_import_torch():
    # `ssenet --help` builds the parser: it must not pay torch's import (seconds on a cold disk).
    code = (
        "import sys, ssenet, ssenet.cli; ssenet.cli.build_parser(); "
        "print('torch' in sys.modules, 'ssenet.api' in sys.modules)"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_every_public_name_is_the_defining_modules_object():
    from ssenet import api, config, errors, pipeline

    homes = {"ssenet.api": api, "ssenet.config": config, "ssenet.errors": errors,
             "ssenet.pipeline": pipeline}  # fmt: skip
    for name, module in ssenet._EXPORTS.items():
        assert getattr(ssenet, name) is getattr(homes[module], name), name
    assert set(ssenet.__all__) == {"__version__", *ssenet._EXPORTS}
    assert set(ssenet.__all__) <= set(dir(ssenet))


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'CamModle'"):
        ssenet.CamModle  # noqa: B018


def test_version_flag_prints_the_package_version():
    result = subprocess.run([sys.executable, "-m", "ssenet.cli", "--version"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0
    assert result.stdout.strip() == f"ssenet {ssenet.__version__}"


def test_citation_and_changelog_name_the_package_version():
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).parents[1]
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    assert citation["version"] == ssenet.__version__
    paper = citation["preferred-citation"]
    assert paper["title"].startswith("Self-supervised Scale Equivariant Network")
    changelog = (root / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(ssenet.__version__)}\]", changelog, re.M)
    assert "MIT License" in (root / "LICENSE").read_text()
