"""Typed errors raised by domain code and mapped at the boundary (CLI exit codes, gRPC status).

Every error message names what was wrong: the field, the value, the file.
"""

from __future__ import annotations


class RecsysError(Exception):
    """Base class: an expected failure with a message meant for a person."""

    exit_code = 1


class ConfigError(RecsysError):
    """The configuration is invalid (unknown key, bad value, missing file)."""

    exit_code = 2


class DataContractError(RecsysError):
    """A table breaks its data contract (missing columns, wrong types, too many bad rows)."""

    exit_code = 3


class ForbiddenAttributeError(RecsysError):
    """A feature view or model uses an attribute the configuration forbids (e.g. age, sex)."""

    exit_code = 4


class FeatureStoreError(RecsysError):
    """The Feast store could not be built, applied or written."""

    exit_code = 5


class NotFoundError(RecsysError):
    """An id or artifact that was asked for does not exist."""

    exit_code = 6
