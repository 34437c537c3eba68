"""Typed registry errors (candidates to move into :mod:`recsys.errors`)."""

from __future__ import annotations

from recsys.errors import RecsysError


class RegistryError(RecsysError):
    """The model registry refused an operation or found itself inconsistent."""

    exit_code = 7


class VersionConflictError(RegistryError):
    """A version is committed again with different contents (versions are immutable)."""


class PromotionRefusedError(RegistryError):
    """A refused model was asked to serve without ``force``."""
