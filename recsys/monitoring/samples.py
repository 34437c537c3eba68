"""Feature samples: the ranker inputs serving actually used, for skew and drift monitoring.

The contract between the server (which logs a sample of requests) and the monitors (which read
the landed Parquet). Long format, one row per (request, shown item, feature), so any feature set
fits one schema. The items are those the request showed (its top k, in position order), the same
population as the logged impressions the reference profile and the ranker's training rows are
made of:

| column | type | meaning |
| --- | --- | --- |
| request_id | Utf8 | the served request |
| ts | Datetime(us, UTC) | the request time the features were computed for |
| model_version | Utf8 | the version whose ranker used them |
| surface | Utf8 | ``menu`` |
| user_id, restaurant_id, item_id | Int64 | the entities (Feast join keys) |
| feature | Utf8 | the full Feast-style name, ``view__name`` (e.g. ``user_stats__menu_ctr_28d``) |
| value | Float64 | the value used; NaN where it was missing (null) |

Which requests: :func:`is_sampled` is a stable hash of the request id against the rate, so the
decision is reproducible and independent of the server process that answered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import polars as pl

SCHEMA = {
    "request_id": pl.Utf8, "ts": pl.Datetime("us", "UTC"), "model_version": pl.Utf8, "surface": pl.Utf8,
    "user_id": pl.Int64, "restaurant_id": pl.Int64, "item_id": pl.Int64, "feature": pl.Utf8, "value": pl.Float64,
}
_SCALE = float(2**64)


def is_sampled(request_id: str, rate: float) -> bool:
    """True for a stable ``rate`` share of request ids (0 never, 1 always)."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE < rate


def sample_frame(
    *,
    request_id: str,
    ts: datetime,
    model_version: str,
    user_id: int,
    restaurant_id: int,
    item_ids: Sequence[int] | np.ndarray,
    rows: Mapping[str, np.ndarray],
    surface: str = "menu",
) -> pl.DataFrame:
    """One request's feature rows (``{feature: (n,) values}`` aligned with ``item_ids``) in the
    long contract format. Non-numeric features (strings) are left out: they are categories the
    ranker one-hot encodes, monitored through their numeric sources."""
    item_ids = np.asarray(item_ids, dtype=np.int64)
    n = len(item_ids)
    names, values = [], []
    for name, column in rows.items():
        column = np.asarray(column)
        if column.dtype.kind not in "biuf":
            continue
        names.append(name)
        values.append(column.astype(np.float64, copy=False))
    k = len(names)
    return pl.DataFrame(
        {
            "request_id": [request_id] * (n * k), "ts": [ts] * (n * k), "model_version": [model_version] * (n * k),
            "surface": [surface] * (n * k), "user_id": np.full(n * k, user_id, np.int64),
            "restaurant_id": np.full(n * k, restaurant_id, np.int64), "item_id": np.tile(item_ids, k),
            "feature": np.repeat(np.asarray(names, dtype=object), n) if k else [],
            "value": np.concatenate(values) if k else np.empty(0),
        },
        schema=SCHEMA,
    )
