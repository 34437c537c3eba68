"""Serving drift on synthetic samples: a clean draw from the profile's distributions raises no
alert, a scaled feature alerts and is named, calendar and warming-up features never alert."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from recsys.monitoring.profile import build_profile
from recsys.monitoring.samples import sample_frame
from recsys.monitoring.serving_drift import CALENDAR, MONITORED, WARMING_UP, serving_drift

VERSION = "v1"
LOG_START = datetime(2026, 10, 1, 0, 10, tzinfo=UTC)
WINDOW_START = datetime(2026, 10, 11, 0, 30, tzinfo=UTC)  # 10 days of log before it
CHECKED = datetime(2026, 10, 16, tzinfo=UTC)  # a Friday
STATUS = {"item_profile__price": MONITORED, "user_stats__menu_clicks_7d": MONITORED,
          "user_stats__menu_clicks_28d": WARMING_UP, "user_stats__menu_dctr_1d": WARMING_UP,  # 1d + exam curve
          "price_vs_basket__price_vs_basket": WARMING_UP, "request_time__hour_of_day": CALENDAR}
MANIFEST = {"objects": {
    "feature_view:item_profile": {"definition": {"tags": {"kind": "profile"}}},
    "feature_view:user_stats": {"definition": {"tags": {"kind": "daily_stats"}}},
    "on_demand_feature_view:request_time": {"definition": {"sources": {}, "request_sources": {"r": {}}}},
    "on_demand_feature_view:price_vs_basket": {"definition": {
        "sources": {"item_profile": ["price"], "user_stats": ["avg_basket_price_28d"]}}},
}}


def _draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"item_profile__price": rng.lognormal(2.0, 0.5, n), "user_stats__menu_clicks_7d": rng.poisson(4.0, n),
            "user_stats__menu_clicks_28d": rng.poisson(12.0, n), "user_stats__menu_dctr_1d": rng.beta(4, 8, n),
            "price_vs_basket__price_vs_basket": rng.lognormal(0.0, 0.3, n),
            "request_time__hour_of_day": rng.integers(8, 23, n)}


@pytest.fixture(scope="module")
def profile():
    rng = np.random.default_rng(0)
    n = 7000
    frame = pl.DataFrame({name: values.astype(float) for name, values in _draw(rng, n).items()}).with_columns(
        weekday=pl.Series(np.arange(n) % 7, dtype=pl.Int8))
    built = build_profile(frame, list(STATUS), sample_size=500, window=(WINDOW_START.isoformat(),
                                                                        (WINDOW_START + timedelta(days=3)).isoformat()))
    return replace(built, meta={"log_start": LOG_START.isoformat(), "scores": "als_score"})


def _samples(seed: int, requests: int = 150, k: int = 8, change=lambda rows: rows) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for r in range(requests):
        rows = change(_draw(rng, k))
        frames.append(sample_frame(request_id=f"req-{r}", ts=CHECKED + timedelta(minutes=5 * r), model_version=VERSION,
                                   user_id=r, restaurant_id=r % 20, item_ids=np.arange(k) + 100 * r, rows=rows))
    return pl.concat(frames)


def test_a_clean_sample_raises_no_alert_and_each_feature_gets_its_status(profile):
    for seed in range(1, 6):
        report = serving_drift(_samples(seed), VERSION, profile, MANIFEST)
        assert not report.alert, report.to_dict()
        assert {f.drift.feature: f.status for f in report.features} == STATUS
        assert {f.weekday for f in report.features} == {4} and {f.drift.reference for f in report.features} == {"4"}
        assert report.rows == 150 * 8 and report.requests == 150 and report.covered_days == 10


def test_a_scaled_feature_alerts_and_is_named(profile):
    def doubled(rows):
        return {**rows, "user_stats__menu_clicks_7d": rows["user_stats__menu_clicks_7d"] * 2}

    report = serving_drift(_samples(1, change=doubled), VERSION, profile, MANIFEST)
    assert report.alerts == ["user_stats__menu_clicks_7d"]
    assert report.to_dict()["alerts"] == ["user_stats__menu_clicks_7d"]


def test_calendar_and_warming_up_features_never_alert_however_far_they_move(profile):
    def moved(rows):
        return {**rows, "request_time__hour_of_day": np.full(len(rows["item_profile__price"]), 3.0),
                "user_stats__menu_clicks_28d": rows["user_stats__menu_clicks_28d"] * 10,
                "user_stats__menu_dctr_1d": rows["user_stats__menu_dctr_1d"] + 0.5,
                "price_vs_basket__price_vs_basket": np.full(len(rows["item_profile__price"]), 1.0)}

    report = serving_drift(_samples(1, change=moved), VERSION, profile, MANIFEST)
    assert not report.alert
    moved_rows = {f.drift.feature: f.drift for f in report.features if f.status != MONITORED}
    assert all(d.psi > 1.0 for d in moved_rows.values()), moved_rows  # measured, shown, not alerted
