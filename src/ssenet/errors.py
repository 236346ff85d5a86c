"""The one exception type the command line turns into a clean message instead of a traceback."""


class SsenetError(Exception):
    """A user-facing error: bad input, missing file, invalid config. The message names the culprit."""
