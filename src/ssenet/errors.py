"""The one exception type the command line turns into a clean message."""


class SsenetError(Exception):
    """A user-facing error: bad input, missing file, invalid config. It names the culprit."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message ("" when it has none): torch's messages run
    over several lines, and a user-facing error is one."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def summary(err: BaseException) -> str:
    """`Type: first line of the message`, or `Type` alone when the message is empty."""
    line = first_line(err)
    return f"{type(err).__name__}: {line}" if line else type(err).__name__
