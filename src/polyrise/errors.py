"""The one exception type the CLI turns into a clear message and a non-zero exit."""


class PolyriseError(Exception):
    """A user-facing error: bad input, bad config, missing model. The message says what and where."""
