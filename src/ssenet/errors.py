"""The one exception type the command line turns into a clean message."""


class SsenetError(Exception):
    """A user-facing error: bad input, missing file, invalid config. It names the culprit."""
