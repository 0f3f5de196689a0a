"""Errors that compbench reports to the user as one clear sentence."""


class ConfigError(ValueError):
    """Bad input: what is wrong and how to fix it, raised before any expensive work."""
