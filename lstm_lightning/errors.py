"""The one exception type users see: a mistake in their config or data, explained."""


class ConfigError(ValueError):
    """A bad config value or data file. The message names the key or file and the fix.

    The CLI prints it as one line and exits non-zero, without a traceback (``--debug``
    shows one).
    """


def check(condition: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
