"""The one exception type the CLI turns into a clear message and a non-zero exit."""


class PolyriseError(Exception):
    """A user-facing error: bad input, bad config, missing model. The message says what and where."""


def missing_extra(module: str, extra: str, needed_by: str) -> str | None:
    """Why `needed_by` cannot run when the optional dependency `module` is not installed (one line naming the
    extra to install), or None when it is; checked before any work."""
    from importlib.util import find_spec

    if find_spec(module) is not None:
        return None
    return f"{needed_by} needs {module}, which is not installed: pip install 'polyrise[{extra}]'"
