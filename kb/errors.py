"""Exceptions raised by kb: every failure a person can act on has one of these types."""

from __future__ import annotations


class KBError(Exception):
    """Base class of every error kb raises on purpose."""


class ConfigError(KBError, ValueError):
    """A setting has a value kb cannot use."""


class DatabaseUnavailable(KBError):
    """The database cannot be reached, or the embedded server cannot be started."""


class DatabaseBusy(KBError):
    """No connection became free in time (the pool is exhausted)."""


class QueryTimeout(KBError):
    """A statement ran past the configured statement timeout and was cancelled."""


class InvalidInput(KBError, ValueError):
    """A value handed to kb cannot be stored or queried as it is."""


class NotFound(KBError, LookupError):
    """A collection or document that was asked for does not exist."""


class CollectionNotFound(NotFound):
    """The named collection does not exist."""


class EmbedderMismatch(KBError, ValueError):
    """An embedder's model or dimension differs from the one a collection was built with."""


class ReadOnlyError(KBError):
    """A write was attempted while kb runs in read-only mode."""
