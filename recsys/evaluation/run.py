"""One evaluation end to end: log -> policies -> estimates, lift, slices, exposure -> report dict.

A short chain of the stages in this package; the CLI and the benchmark call :func:`evaluate`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Sequence

import polars as pl

from recsys.evaluation.columns import (
    ESTIMATOR_NAMES, POLICY_ENTITY, REQ_IDX, REQUEST_ID, EvalOptions, entity_column,
)
from recsys.evaluation.compare import BUILTIN_SLICES, compare, compare_slices, exposure
from recsys.evaluation.logs import join_policy, load_log, scan_table
from recsys.evaluation.model_policy import ANSWERED_BY
from recsys.evaluation.policies import resolve_policy
from recsys.evaluation.report import headline


def _policy_label(name_or_path: str | Path) -> str:
    path = Path(str(name_or_path))
    return path.stem if path.suffix == ".parquet" else str(name_or_path)


def load_table(path: str | Path | None) -> pl.DataFrame | None:
    """A whole side table (restaurants, users, items), or None when no path is given."""
    return None if path is None else scan_table(path).collect()


def evaluate(
    log_path: str | Path,
    policy: str | Path,
    *,
    baseline: str | Path = "popularity",
    surface: str | None = None,
    options: EvalOptions = EvalOptions(),
    slices: Sequence[str] = (),
    restaurants: pl.DataFrame | None = None,
    users: pl.DataFrame | None = None,
    catalog: pl.Series | None = None,
    new_days: int = 30,
    popularity_until: datetime | None = None,
    estimators: Sequence[str] = ESTIMATOR_NAMES,
    config=None,
) -> dict:
    """Evaluate ``policy`` against ``baseline`` on one surface of a log; return the report dict.

    ``config``: the application config, needed by ``model:<VERSION>`` and ``serving`` policies.
    """
    names = scan_table(log_path).collect_schema().names()
    log_columns = [c for c in slices if c not in BUILTIN_SLICES or c in names]
    log = load_log(log_path, surface=surface, columns=log_columns)
    surface = log["surface"][0]
    kw = dict(surface=surface, reward=options.reward, seed=options.seed, popularity_until=popularity_until,
              config=config)
    lists = {side: resolve_policy(p, log, **kw) for side, p in (("policy", policy), ("baseline", baseline))}
    events = {side: join_policy(log, frame, surface=surface) for side, frame in lists.items()}
    result = compare(events["policy"], events["baseline"], options, estimators)
    slice_results = []
    for column in slices:
        slice_results += compare_slices(events["policy"], events["baseline"], column,
                                        options, surface=surface, restaurants=restaurants, users=users)
    if catalog is None and restaurants is not None and surface == "feed":
        catalog = restaurants["restaurant_id"]
    warnings = []
    report: dict = {
        "log": {"path": str(log_path), "surface": surface, "rows": log.height,
                "requests": int(log[REQ_IDX].max()) + 1, "entity": entity_column(surface)},
        "options": {"reward": options.reward, "clip": options.clip, "n_bootstrap": options.n_bootstrap,
                    "seed": options.seed, "min_matched": options.min_matched, "min_ess": options.min_ess},
    }
    for side, name, ests in (("policy", policy, result.policy), ("baseline", baseline, result.baseline)):
        filled = events[side][POLICY_ENTITY].is_not_null().mean()
        report[side] = {
            "name": _policy_label(name), "source": str(name), "slot_fill": filled,
            "estimates": {k: v.to_dict() for k, v in ests.items()},
            "exposure": exposure(events[side], surface=surface, catalog=catalog, restaurants=restaurants,
                                 new_days=new_days),
        }
        if ANSWERED_BY in lists[side].columns:  # a model policy: who answered each request
            answered = (lists[side].group_by(REQUEST_ID).agg(pl.col(ANSWERED_BY).first())
                        [ANSWERED_BY].value_counts(sort=True))
            report[side]["answered_by"] = dict(zip(answered[ANSWERED_BY].to_list(), answered["count"].to_list()))
        if filled < 1:
            warnings.append(f"{report[side]['name']}: lists fill {100 * filled:.1f}% of the logged slots; "
                            "empty slots count as reward 0")
        for k, v in ests.items():
            if v.overall.warning and k != "naive":
                warnings.append(f"{report[side]['name']} {k}: {v.overall.matched:,} matched events, ESS "
                                f"{v.overall.ess:,.0f} (thresholds {options.min_matched}, {options.min_ess:g})")
    report["lifts"] = {k: vars(v) for k, v in result.lifts.items()}
    report["slices"] = [s.to_dict() for s in slice_results]
    report["warnings"] = warnings
    report["headline"] = headline(report, "snips" if "snips" in estimators else next(iter(result.lifts), "snips"))
    return report
