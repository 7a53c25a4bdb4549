"""Errors raised by the taxonomy package; all are ``ValueError`` subclasses via ``ConfigError``."""

from __future__ import annotations

from ..errors import ConfigError


class TaxonomyError(ConfigError):
    """Base class of the taxonomy errors."""


class UnknownTaxonomyError(TaxonomyError):
    """A taxonomy name is not one of the built-in taxonomies."""


class UnknownRiskError(TaxonomyError):
    """A risk value or category cannot be resolved, or is ambiguous."""


class TaxonomyFileError(TaxonomyError):
    """A user taxonomy file is unreadable or invalid; the message names the file and the entry."""
