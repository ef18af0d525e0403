"""The one exception type users see: a mistake in their config or data, explained."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConfigError(ValueError):
    """A bad config value or data file. The message names the key or file and the fix.

    The CLI prints it as one line and exits non-zero, without a traceback (``--debug``
    shows one).
    """


def check(condition: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean a, b?)' for the choices closest to ``word``, or '' when none is close.

    A dotted key that matches nothing whole is matched by its last part too, so
    ``model.hiden_size`` finds ``model.hidden_size`` and ``hiden_size`` finds it as well.
    """
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    if not close:
        leaf = word.rsplit(".", 1)[-1]
        leaves = difflib.get_close_matches(leaf, [c.rsplit(".", 1)[-1] for c in choices], n=n)
        close = [c for c in choices if c.rsplit(".", 1)[-1] in leaves][:n]
    return f" (did you mean {', '.join(close)}?)" if close else ""
