"""Policies to evaluate, as lists: baselines built from the log itself, or a Parquet file.

A policy here is what it would show: a frame ``request_id, position, policy_entity,
policy_propensity`` (see :func:`recsys.evaluation.logs.check_policy_lists`). The baselines need
no trained model and only see the log, so they can only rank the entries the log shows:

- ``logged``: the log's own lists, with the logging propensities as the policy's own
  probabilities (a stochastic policy: w = 1), so every estimator returns the naive CTR exactly.
- ``random``: a seeded uniform permutation of each request's *shown* entries. With only the shown
  entries available this is "shuffle the logged slate", not "a random ranking of all n_candidates":
  it cannot place a candidate the log never showed.
- ``popularity``: each request's shown entries ranked by their click count over the whole log
  (ties by id), or over the rows before ``popularity_until`` when given. The whole-log default
  lets the popularity of an entry include the evaluated events' own clicks: the bias is small when
  each entry has many events, and zero with a ``popularity_until`` before the evaluated period.

More policies plug in through :func:`register_policy` (a name -> builder, or with
``prefix=True`` a family of names ``<prefix><arg>``). A registered model version resolves there:
``model:<VERSION>`` and ``serving`` (the registry's serving version) rank each logged request
through the server's ranking stages (:mod:`recsys.evaluation.model_policy`); they need the
application config (``resolve_policy(..., config=...)``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from recsys.errors import NotFoundError
from recsys.evaluation.columns import (
    ENTITY, POLICY_ENTITY, POLICY_PROPENSITY, POSITION, PROPENSITY, REQ_IDX, REQUEST_ID, TS, entity_column,
)
from recsys.evaluation.logs import load_policy_lists

PolicyBuilder = Callable[..., pl.DataFrame]
_REGISTRY: dict[str, PolicyBuilder] = {}
_FAMILIES: dict[str, PolicyBuilder] = {}


def register_policy(name: str, builder: PolicyBuilder, *, prefix: bool = False) -> None:
    """Make ``name`` resolvable: ``builder(log, *, surface, reward, seed, popularity_until, config)``
    -> lists. With ``prefix=True`` every name ``<name><arg>`` resolves, the builder getting
    ``arg=<arg>`` too (e.g. ``model:`` + a version)."""
    if prefix and not name:
        raise ValueError("register_policy: an empty prefix would capture every name")
    (_FAMILIES if prefix else _REGISTRY)[name] = builder


def _lists(log: pl.DataFrame, entity: pl.Expr, propensity: pl.Expr | float = 1.0) -> pl.DataFrame:
    prop = propensity if isinstance(propensity, pl.Expr) else pl.lit(float(propensity))
    return log.select(REQUEST_ID, POSITION, entity.alias(POLICY_ENTITY), prop.cast(pl.Float64).alias(POLICY_PROPENSITY))


def _rank_within_request(log: pl.DataFrame, sort_key: pl.Expr, descending: bool) -> pl.DataFrame:
    """Reorder each request's logged entries by ``sort_key``; positions become 0..n-1 again.

    ``log`` is in canonical order (requests contiguous by ``req_idx``, positions 0..n-1), so
    after a sort by (req_idx, key) row i still belongs to the same request as row i of the log,
    and the log's own position column numbers the new order.
    """
    ranked = log.select(REQ_IDX, REQUEST_ID, ENTITY, POSITION, sort_key.alias("_key")).sort(
        [REQ_IDX, "_key", POSITION], descending=[False, descending, False], multithreaded=True
    )
    return ranked.select(
        REQUEST_ID, log[POSITION].alias(POSITION),
        pl.col(ENTITY).alias(POLICY_ENTITY), pl.lit(1.0).alias(POLICY_PROPENSITY),
    )


def logged_policy(log: pl.DataFrame, **_: object) -> pl.DataFrame:
    """The logging policy itself: its lists, with pi = mu so that every weight is 1."""
    return _lists(log, pl.col(ENTITY), pl.col(PROPENSITY))


def random_policy(log: pl.DataFrame, *, seed: int = 0, **_: object) -> pl.DataFrame:
    """A seeded uniform permutation of each request's shown entries (see the module note)."""
    key = pl.Series("_u", np.random.default_rng(seed).random(log.height))
    return _rank_within_request(log.with_columns(key), pl.col("_u"), descending=False)


def popularity_policy(log: pl.DataFrame, *, reward: str = "clicked",
                      popularity_until: datetime | None = None, **_: object) -> pl.DataFrame:
    """Each request's shown entries by click count over the log (or before ``popularity_until``)."""
    train = log if popularity_until is None else log.filter(pl.col(TS) < popularity_until)
    counts = train.group_by(ENTITY).agg(pl.col(reward).cast(pl.Int64).sum().alias("_pop"))
    scored = log.join(counts, on=ENTITY, how="left", maintain_order="left").with_columns(pl.col("_pop").fill_null(0))
    return _rank_within_request(scored, pl.col("_pop"), descending=True)


register_policy("logged", logged_policy)
register_policy("random", random_policy)
register_policy("popularity", popularity_policy)


def _require_config(name: str, config):
    if config is None:
        from recsys.errors import ConfigError

        raise ConfigError(f"policy {name!r} needs the application config (registry, feature store): "
                          "pass config= to resolve_policy / evaluate")
    return config


def model_policy(log: pl.DataFrame, *, arg: str, surface: str, config=None, **_: object) -> pl.DataFrame:
    """``model:<VERSION>``: that registered version's greedy lists through the serving stages."""
    from recsys.evaluation.model_policy import model_policy_lists

    return model_policy_lists(_require_config(f"model:{arg}", config), arg, log, surface=surface)[0]


def serving_policy(log: pl.DataFrame, *, surface: str, config=None, **_: object) -> pl.DataFrame:
    """``serving``: the version the registry's SERVING pointer names, as ``model:<VERSION>``."""
    from recsys.evaluation.model_policy import model_policy_lists

    return model_policy_lists(_require_config("serving", config), None, log, surface=surface)[0]


register_policy("model:", model_policy, prefix=True)
register_policy("serving", serving_policy)


def policy_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY)) + tuple(f"{p}<...>" for p in sorted(_FAMILIES))


def resolve_policy(
    name_or_path: str | Path,
    log: pl.DataFrame,
    *,
    surface: str,
    reward: str = "clicked",
    seed: int = 0,
    popularity_until: datetime | None = None,
    config=None,
) -> pl.DataFrame:
    """The lists of a policy given by registered name (or prefix family) or by a Parquet file
    (or directory) of lists. ``config``: the application config, for policies that need it
    (``model:<VERSION>``, ``serving``).

    Raises NotFoundError for a name that is neither registered nor an existing path, and for a
    model version the registry does not hold (naming it).
    """
    key = str(name_or_path)
    kw = dict(surface=surface, reward=reward, seed=seed, popularity_until=popularity_until, config=config)
    if key in _REGISTRY:
        return _REGISTRY[key](log, **kw)
    for prefix, builder in _FAMILIES.items():
        if key.startswith(prefix):
            arg = key[len(prefix):]
            if not arg:
                raise NotFoundError(f"policy {key!r}: expected {prefix}<name> (e.g. {prefix}<VERSION>)")
            return builder(log, arg=arg, **kw)
    path = Path(key)
    if path.exists():
        return load_policy_lists(path, surface=surface)
    raise NotFoundError(
        f"policy {key!r}: not a known policy ({', '.join(policy_names())}) nor an existing Parquet "
        f"file of lists (request_id, position, {entity_column(surface)})"
    )
