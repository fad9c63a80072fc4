"""Errors of the token index."""


class RegexUnsupported(ValueError):
    """The regex uses syntax outside the supported subset (or its automaton grows too large)."""
