"""Typed errors of the training step (all :class:`recsys.errors.RecsysError`)."""

from __future__ import annotations

from recsys.errors import RecsysError


class TrainingError(RecsysError):
    """Base class of the training step's expected failures."""

    exit_code = 7


class TrainingDataError(TrainingError):
    """A training matrix or id map breaks its contract (type, dtype, shape, values)."""


class ModelFitError(TrainingError):
    """A fit produced unusable factors (NaN or inf), or a model is used before it is fitted."""


class ModelArtifactError(TrainingError):
    """A saved model file is missing, unreadable or inconsistent."""
