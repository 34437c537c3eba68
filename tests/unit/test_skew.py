"""Skew comparison rules (tolerances, missing values, threshold) and reading feature samples."""

from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from recsys.errors import DataContractError, NotFoundError
from recsys.monitoring.samples import sample_frame
from recsys.monitoring.skew import SkewThresholds, compare, read_samples

TS = datetime(2026, 10, 15, 0, 0, 1, tzinfo=timezone.utc)


def _joined(feature: str, online: list[float], offline: list[float | None]) -> pl.DataFrame:
    sample = sample_frame(request_id="r", ts=TS, model_version="v", user_id=1, restaurant_id=2,
                          item_ids=np.arange(len(online)), rows={feature: np.asarray(online, dtype=np.float64)})
    return sample.with_columns(pl.Series("offline", offline, dtype=pl.Float64))


def test_float32_round_trips_and_missing_on_both_sides_agree():
    rating = float(np.float32(4.3))
    report = compare(_joined("restaurant_profile__rating", [rating, np.nan, 0.0], [4.3, None, 1e-9]),
                     SkewThresholds())
    assert [(f.feature, f.mismatches, f.alert) for f in report] == [("restaurant_profile__rating", 0, False)]


def test_a_value_missing_on_one_side_or_beyond_tolerance_is_a_mismatch():
    [skew] = compare(_joined("user_stats__menu_ctr_7d", [0.1, np.nan, 0.2, 0.3], [0.1, 0.5, None, 0.33]),
                     SkewThresholds())
    assert skew.mismatches == 3 and skew.alert
    assert skew.mean_abs_diff == pytest.approx((0.0 + 0.03) / 2)
    assert [e["item_id"] for e in skew.examples] == [1, 2, 3]
    assert skew.examples[0]["online"] is None and skew.examples[1]["offline"] is None


def test_a_feature_alerts_only_above_the_mismatch_share():
    online, offline = [1.0] * 10, [1.0] * 9 + [2.0]
    [at] = compare(_joined("f__x", online, offline), SkewThresholds(max_mismatch_share=0.1))
    [above] = compare(_joined("f__x", online, offline), SkewThresholds(max_mismatch_share=0.05))
    assert at.mismatch_share == pytest.approx(0.1) and not at.alert and above.alert


def test_samples_are_read_from_a_directory_skipping_hidden_files(tmp_path):
    for i in range(2):
        _joined("f__x", [1.0], [1.0]).drop("offline").write_parquet(tmp_path / f"part-{i}.parquet")
    (tmp_path / ".part-2.tmp.parquet").write_bytes(b"partial")  # a writer's temporary
    assert read_samples(tmp_path).height == 2
    _joined("f__x", [1.0], [1.0]).drop("offline", "ts").write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataContractError, match=r"bad.parquet: lacks columns \['ts'\]"):
        read_samples(tmp_path)
    with pytest.raises(NotFoundError, match="no such file"):
        read_samples(tmp_path / "missing")
