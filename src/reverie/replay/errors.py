"""Errors raised by the replay store.

Both are ``ValueError`` subclasses so a caller that guards configuration
mistakes with ``except ValueError`` also catches them.
"""

from __future__ import annotations


class ReplayError(ValueError):
    """The replay was used in a way it cannot serve (bad settings, bad steps, too little data)."""


class ReplayFormatError(ReplayError):
    """A file in the replay folder is readable but is not a chunk this replay can use."""
