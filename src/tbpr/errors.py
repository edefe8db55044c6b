"""Errors the user can act on: the CLI prints their message without a traceback."""


class TbprError(Exception):
    """A problem with the user's input: the message names the file/field and what to do."""


class DataError(TbprError):
    """A dataset, annotation file or image that cannot be used as given."""


class ConfigError(TbprError):
    """A configuration value that is missing, unknown or of the wrong type."""
