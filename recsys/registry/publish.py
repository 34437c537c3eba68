"""The publish hook of the model-version contract: write one version's online rows.

:meth:`recsys.registry.Registry.promote` and :meth:`~recsys.registry.Registry.rollback` call it
before moving the pointer. It must write every online row derived from ``version`` (precomputed
restaurant lists, restaurant candidates, embeddings), each carrying ``model_version``, with an
event timestamp newer than the rows it replaces (Feast's Redis store ignores a write that is not
newer), so that rolling back really restores the previous version's rows.
"""

from __future__ import annotations

from recsys.config import Config


def publish_version(config: Config, version: str) -> None:
    """Write ``version``'s online rows to the online store (idempotent; may run again)."""
    raise NotImplementedError("online publishing lands with the nightly pipeline")
