"""The one exception type for user mistakes. The CLI prints it in one line and exits 2;
anything else that escapes is a bug and keeps its traceback."""


class UserError(Exception):
    """A mistake in what the user asked for: a flag, a config value, an input path."""


class ConfigError(UserError):
    """A job config value that cannot work; raised before any work starts."""
