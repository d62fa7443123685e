"""Errors a user can cause: each message names the option or input at fault."""


class OptionError(ValueError):
    """A user-supplied option value is invalid; the message names the option."""
