"""The `ssenet` command line."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("ssenet: under construction", file=sys.stderr)
    return 1
