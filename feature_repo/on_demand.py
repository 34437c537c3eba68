"""On-demand views: request-time transforms, computed identically offline and online.

Both run in pandas mode: ``get_historical_features`` and ``get_online_features`` call the same
function, so training and serving cannot diverge.
"""

import pandas as pd
from feast import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

from sources import request_context
from views import item_profile, user_stats

# Used when the user has no basket yet (no order in 28d) or its mean is not positive:
# the item is then neither cheap nor expensive for this user.
DEFAULT_PRICE_RATIO = 1.0


@on_demand_feature_view(
    sources=[request_context],
    schema=[
        # No Field descriptions here: Feast compares declared and inferred ODFV fields with ==.
        Field(name="hour_of_day", dtype=Int64),  # 0..23, UTC
        Field(name="day_of_week", dtype=Int64),  # 0 = Monday .. 6 = Sunday, UTC
    ],
    mode="pandas",
    description="Calendar features of the request timestamp (UTC).",
    tags={"owner": "features", "surface": "feed,menu", "kind": "request_time"},
)
def request_time(inputs: pd.DataFrame) -> pd.DataFrame:
    ts = pd.to_datetime(inputs["request_ts"], utc=True)
    out = pd.DataFrame(index=inputs.index)
    out["hour_of_day"] = ts.dt.hour.astype("int64")
    out["day_of_week"] = ts.dt.dayofweek.astype("int64")
    return out


@on_demand_feature_view(
    sources=[item_profile[["price"]], user_stats[["avg_basket_price_28d"]]],
    schema=[
        # item price / the user's 28d mean ordered item price (DEFAULT_PRICE_RATIO when unknown)
        Field(name="price_vs_basket", dtype=Float64),
    ],
    mode="pandas",
    description="How expensive the item is relative to what this user usually orders.",
    tags={"owner": "features", "surface": "menu", "kind": "request_time"},
)
def price_vs_basket(inputs: pd.DataFrame) -> pd.DataFrame:
    price = pd.to_numeric(inputs["price"], errors="coerce").astype("float64")
    basket = pd.to_numeric(inputs["avg_basket_price_28d"], errors="coerce").astype("float64")
    ratio = price / basket.where(basket > 0)
    out = pd.DataFrame(index=inputs.index)
    out["price_vs_basket"] = ratio.fillna(DEFAULT_PRICE_RATIO).astype("float64")
    return out
