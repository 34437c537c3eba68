"""Compare a policy with a baseline on the same log: paired lift, slices, exposure.

Both policies are joined to the same log, so their per-request matrices share rows, and one
Poisson weight matrix resamples both (a paired bootstrap): the interval of the lift reflects the
variance of the difference, not of each policy alone. A policy compared with itself has a lift
of exactly 0 and an interval of width 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Sequence

import numpy as np
import polars as pl

from recsys.errors import DataContractError
from recsys.evaluation.bootstrap import bootstrap_sums, percentile_interval
from recsys.evaluation.columns import (
    ENTITY, ESTIMATOR_NAMES, POLICY_ENTITY, REQ_IDX, RESTAURANT_ID, TS, USER_ID, EvalOptions,
    entity_column,
)
from recsys.evaluation.estimators import (
    N_QUANTITIES, Estimate, SlotMatrix, estimates_from_sums, slot_matrix, summarise,
)

MAX_SLICE_VALUES = 12
BUILTIN_SLICES = ("user_type", "hour", "cuisine", "cell")


@dataclass(frozen=True)
class Lift:
    """Relative lift ``policy / baseline - 1`` and difference, with paired 95% intervals."""

    estimator: str
    lift: float
    low: float
    high: float
    difference: float
    difference_low: float
    difference_high: float


@dataclass(frozen=True)
class Comparison:
    policy: dict[str, Estimate]
    baseline: dict[str, Estimate]
    lifts: dict[str, Lift]

    def to_dict(self) -> dict:
        return {
            "policy": {k: v.to_dict() for k, v in self.policy.items()},
            "baseline": {k: v.to_dict() for k, v in self.baseline.items()},
            "lifts": {k: asdict(v) for k, v in self.lifts.items()},
        }


def _check_same_log(a: pl.DataFrame, b: pl.DataFrame) -> None:
    if a.height != b.height or not a[REQ_IDX].equals(b[REQ_IDX]):
        raise DataContractError("compare: the policy and the baseline must be joined to the same log")


def _overall(name: str, sums: np.ndarray, n_pos: int) -> np.ndarray:
    return estimates_from_sums(name, sums.reshape(*sums.shape[:-1], n_pos, N_QUANTITIES))[..., -1]


def compare(
    policy_events: pl.DataFrame,
    baseline_events: pl.DataFrame,
    options: EvalOptions = EvalOptions(),
    estimators: Sequence[str] = ESTIMATOR_NAMES,
    *,
    n_requests: int | None = None,
) -> Comparison:
    """Every estimator for both policies and the paired lift of the policy over the baseline.

    ``n_requests``: the log's number of requests when the events are subsets of one log (slices);
    by default both must be joined to the same whole log.
    """
    if n_requests is None:
        _check_same_log(policy_events, baseline_events)
    boot_on = options.n_bootstrap > 0
    with_dr = "dr" in estimators
    pm = slot_matrix(policy_events, options, with_dr=with_dr, per_request=boot_on, n_requests=n_requests)
    bm = slot_matrix(baseline_events, options, with_dr=with_dr, per_request=boot_on, n_requests=n_requests)
    if pm.labels != bm.labels:  # slices: pad the shorter position range with empty buckets
        pm, bm = _align(pm, bm)
    pb = bb = None
    if boot_on:
        pb, bb = bootstrap_sums([pm.per_request, bm.per_request], n_resamples=options.n_bootstrap,
                                seed=options.seed, chunk_elements=options.chunk_elements)
    lifts = {}
    n_pos = len(pm.labels)
    for name in estimators:
        if name == "naive":
            continue  # the same log for both: no lift to speak of
        p, b = _overall(name, pm.sums.ravel(), n_pos), _overall(name, bm.sums.ravel(), n_pos)
        lo = hi = dlo = dhi = float("nan")
        if boot_on:
            ps, bs = _overall(name, pb, n_pos), _overall(name, bb, n_pos)
            with np.errstate(invalid="ignore", divide="ignore"):
                (lo, dlo), (hi, dhi) = percentile_interval(np.stack([ps / bs - 1, ps - bs], axis=1))
        lifts[name] = Lift(estimator=name, lift=float(p / b - 1) if b > 0 else float("nan"),
                           low=float(lo), high=float(hi), difference=float(p - b),
                           difference_low=float(dlo), difference_high=float(dhi))
    return Comparison(
        policy={n: summarise(n, pm, pb, options) for n in estimators},
        baseline={n: summarise(n, bm, bb, options) for n in estimators},
        lifts=lifts,
    )


# ---------------------------------------------------------------- slices
def slice_keys(
    events: pl.DataFrame,
    name: str,
    *,
    surface: str,
    restaurants: pl.DataFrame | None = None,
    users: pl.DataFrame | None = None,
) -> pl.Series:
    """The slice value of every logged slot, as strings.

    - ``user_type``: ``returning`` if the user has a logged request on an earlier day, else ``new``
      (a log column named ``user_type`` wins);
    - ``hour``: hour of day (UTC) of the request;
    - ``cuisine``: cuisine of the restaurant the *policy* shows (feed) or of the opened restaurant
      (menu), from ``restaurants`` or else from a ``cuisine`` column of the log;
    - ``cell``: the user's ``home_cell`` from ``users``, or else a ``cell`` column of the log;
    - any other name: that log column, as is (request-level columns are the safe kind).
    """
    if name in events.columns and name not in ("cuisine",):
        return events[name].cast(pl.String).fill_null("null")
    if name == "user_type":
        day = pl.col(TS).dt.date()
        first = events.select(USER_ID, day.alias("_d")).group_by(USER_ID).agg(pl.col("_d").min().alias("_first"))
        out = events.select(USER_ID, day.alias("_d")).join(first, on=USER_ID, how="left", maintain_order="left")
        return out.select(pl.when(pl.col("_d") > pl.col("_first")).then(pl.lit("returning"))
                          .otherwise(pl.lit("new")).alias(name)).to_series()
    if name == "hour":
        return events[TS].dt.hour().cast(pl.String).alias(name)
    if name == "cuisine":
        key = POLICY_ENTITY if surface == "feed" else RESTAURANT_ID
        if restaurants is not None and "cuisine" in restaurants.columns:
            table = restaurants.select(RESTAURANT_ID, "cuisine")
        elif "cuisine" in events.columns:
            table = events.select(RESTAURANT_ID, "cuisine").unique(RESTAURANT_ID)
        else:
            raise DataContractError("slice 'cuisine': give a restaurants table or a log with a cuisine column")
        table = table.with_columns(pl.col(RESTAURANT_ID).cast(events.schema[key]))
        return (events.select(pl.col(key).alias(RESTAURANT_ID))
                .join(table, on=RESTAURANT_ID, how="left", maintain_order="left")["cuisine"]
                .cast(pl.String).fill_null("unknown").alias(name))
    if name == "cell" and users is not None and "home_cell" in users.columns:
        table = users.select(USER_ID, "home_cell").with_columns(pl.col(USER_ID).cast(events.schema[USER_ID]))
        return (events.select(USER_ID).join(table, on=USER_ID, how="left", maintain_order="left")["home_cell"]
                .cast(pl.String).fill_null("unknown").alias(name))
    raise DataContractError(f"slice {name!r}: no such log column, and not derivable (built-in: {BUILTIN_SLICES})")


@dataclass(frozen=True)
class SliceResult:
    column: str
    value: str
    policy: Estimate
    baseline: Estimate
    lift: Lift | None

    def to_dict(self) -> dict:
        return {"column": self.column, "value": self.value, "policy": self.policy.to_dict(),
                "baseline": self.baseline.to_dict(), "lift": asdict(self.lift) if self.lift else None}


def compare_slices(
    policy_events: pl.DataFrame,
    baseline_events: pl.DataFrame,
    column: str,
    options: EvalOptions = EvalOptions(),
    *,
    surface: str,
    estimator: str = "snips",
    restaurants: pl.DataFrame | None = None,
    users: pl.DataFrame | None = None,
) -> list[SliceResult]:
    """``estimator`` and the paired lift in each value of a slice (the largest values; the rest
    together as ``other``). Entity-level slices (cuisine on the feed) follow each policy's own
    entries, so the two policies' slots in a value may differ."""
    _check_same_log(policy_events, baseline_events)
    pk = slice_keys(policy_events, column, surface=surface, restaurants=restaurants, users=users)
    bk = slice_keys(baseline_events, column, surface=surface, restaurants=restaurants, users=users)
    top = pk.value_counts(sort=True).head(MAX_SLICE_VALUES)[pk.name].to_list()
    if len(pk.unique()) > MAX_SLICE_VALUES:
        pk = pl.Series(column, np.where(pk.is_in(top).to_numpy(), pk.to_numpy(), "other"))
        bk = pl.Series(column, np.where(bk.is_in(top).to_numpy(), bk.to_numpy(), "other"))
        top = top + ["other"]
    results = []
    n_req = int(policy_events[REQ_IDX].max()) + 1
    for value in sorted(top, key=_natural):
        pe = policy_events.filter((pk == value).to_numpy())
        be = baseline_events.filter((bk == value).to_numpy())
        if pe.height == 0 or be.height == 0:
            continue
        # The whole log's request numbering: the bootstrap weights stay paired across policies.
        res = compare(pe, be, options, (estimator,), n_requests=n_req)
        results.append(SliceResult(column=column, value=str(value), policy=res.policy[estimator],
                                   baseline=res.baseline[estimator], lift=res.lifts.get(estimator)))
    return results


def _natural(value: str) -> tuple:
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def _align(a: SlotMatrix, b: SlotMatrix) -> tuple[SlotMatrix, SlotMatrix]:
    labels = a.labels if len(a.labels) >= len(b.labels) else b.labels

    def pad(m: SlotMatrix) -> SlotMatrix:
        extra = len(labels) - len(m.labels)
        if extra == 0:
            return m
        sums = np.vstack([m.sums, np.zeros((extra, N_QUANTITIES))])
        per = m.per_request
        if per is not None:
            per = np.hstack([per, np.zeros((per.shape[0], extra * N_QUANTITIES), dtype=per.dtype)])
        return SlotMatrix(per_request=per, sums=sums, labels=labels)

    return pad(a), pad(b)


# ---------------------------------------------------------------- exposure
def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: equal exposure; -> 1: all on one entry)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = x.size, x.sum()
    if n == 0 or total == 0:
        return float("nan")
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * total))


def exposure(
    events: pl.DataFrame,
    *,
    surface: str,
    catalog: pl.Series | None = None,
    restaurants: pl.DataFrame | None = None,
    new_days: int = 30,
) -> dict:
    """Exposure of a policy's entries over the logged slots it fills.

    - ``coverage``: distinct entries shown / catalog size (the catalog: ``catalog`` ids, else the
      entries the log shows or the policy ranks);
    - ``gini``: Gini of slot counts across the catalog (zeros included); on the menu also across
      restaurants (``gini_restaurants``, the opened restaurants, the same for every policy);
    - ``new_restaurant_share``: share of slots on restaurants created within ``new_days`` before
      the request (needs ``restaurants`` with ``created_ts``).
    """
    shown = events.filter(pl.col(POLICY_ENTITY).is_not_null())
    counts = shown.group_by(POLICY_ENTITY).len()
    if catalog is None:
        catalog = pl.concat([events[ENTITY], counts[POLICY_ENTITY]]).unique()
    catalog = catalog.cast(counts.schema[POLICY_ENTITY]).unique()
    full = pl.DataFrame({POLICY_ENTITY: catalog}).join(counts, on=POLICY_ENTITY, how="left")["len"].fill_null(0)
    out: dict = {
        "entity": entity_column(surface), "slots": shown.height,
        "catalog_size": len(catalog), "distinct_shown": int(counts.height),
        "coverage": counts.height / len(catalog) if len(catalog) else float("nan"),
        "gini": gini(full.to_numpy()),
    }
    if surface == "menu":
        out["gini_restaurants"] = gini(shown.group_by(RESTAURANT_ID).len()["len"].to_numpy())
    if restaurants is not None and "created_ts" in restaurants.columns:
        key = POLICY_ENTITY if surface == "feed" else RESTAURANT_ID
        table = restaurants.select(pl.col(RESTAURANT_ID).cast(shown.schema[key]).alias(key), "created_ts")
        joined = shown.select(key, TS).join(table, on=key, how="left", maintain_order="left")
        new = (pl.col("created_ts") >= pl.col(TS) - timedelta(days=new_days)).fill_null(False)
        out["new_restaurant_share"] = float(joined.select(new.mean()).item()) if joined.height else float("nan")
        out["new_days"] = new_days
    return out
