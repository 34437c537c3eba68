"""Feature views: the single definition of every stored feature, offline and online.

Stats views hold one row per entity per day (``event_timestamp`` = the midnight UTC that ends
the day summarised; the row uses only events strictly before it). Windows are 1, 7 and 28 days
(``FeaturesConfig.windows_days``); ``recsys.features.stats.stats_feature_names`` builds the same
names and a test keeps the two in step. Per surface and window: impressions, clicks, orders, the
smoothed CTR, expected examinations (``exam``) and the position-debiased CTR (``dctr``); the
examination curve and the estimators are documented in ``recsys.features.stats``.

Pitfalls: ``ttl`` bounds the look-back of point-in-time joins only, it does NOT filter online
reads; Feast's Redis store ignores a write whose event timestamp is not newer than the stored one.
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Float32, Float64, Int32, Int64, String

from entities import item, restaurant, user
from sources import (
    item_embedding_source,
    item_profile_source,
    item_stats_source,
    restaurant_candidates_source,
    restaurant_profile_source,
    restaurant_realtime_push,
    restaurant_stats_source,
    user_embedding_source,
    user_profile_source,
    user_stats_source,
    user_cuisine_affinity_source,
    user_top_restaurants_source,
)

WINDOWS_DAYS = (1, 7, 28)
OWNER = "features"

# Daily snapshots: a row is replaced the next day, so two days of look-back is enough.
STATS_TTL = timedelta(days=2)
# Profiles change rarely; their rows are stamped with the entity's creation time.
PROFILE_TTL = timedelta(days=3650)
# Model-derived rows are republished with every model; a week covers a missed nightly run.
MODEL_TTL = timedelta(days=7)
REALTIME_TTL = timedelta(hours=2)


def _counter_fields(surface: str) -> list[Field]:
    fields: list[Field] = []
    for w in WINDOWS_DAYS:
        fields += [
            Field(name=f"{surface}_impressions_{w}d", dtype=Int64),
            Field(name=f"{surface}_clicks_{w}d", dtype=Int64),
            Field(name=f"{surface}_orders_{w}d", dtype=Int64),
            Field(
                name=f"{surface}_ctr_{w}d",
                dtype=Float64,
                description=f"{surface} CTR over {w}d, beta-smoothed toward the surface's global CTR",
            ),
            Field(
                name=f"{surface}_exam_{w}d",
                dtype=Float64,
                description=f"{surface} expected examinations over {w}d: sum of exam(position) of the "
                "impressions, exam estimated from explored requests",
            ),
            Field(
                name=f"{surface}_dctr_{w}d",
                dtype=Float64,
                description=f"{surface} position-debiased CTR over {w}d: clicks per expected examination, "
                "beta-smoothed toward the surface's global clicks per examination",
            ),
        ]
    return fields


user_stats = FeatureView(
    name="user_stats",
    entities=[user],
    ttl=STATS_TTL,
    schema=_counter_fields("feed")
    + _counter_fields("menu")
    + [
        Field(
            name="avg_basket_price_28d",
            dtype=Float64,
            description="Mean price of menu items ordered in 28d; null if none",
        )
    ],
    source=user_stats_source,
    online=True,
    tags={"owner": OWNER, "surface": "feed,menu", "kind": "daily_stats"},
)

restaurant_stats = FeatureView(
    name="restaurant_stats",
    entities=[restaurant],
    ttl=STATS_TTL,
    schema=_counter_fields("feed") + _counter_fields("menu"),
    source=restaurant_stats_source,
    online=True,
    tags={"owner": OWNER, "surface": "feed,menu", "kind": "daily_stats"},
)

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=STATS_TTL,
    schema=_counter_fields("menu"),
    source=item_stats_source,
    online=True,
    tags={"owner": OWNER, "surface": "menu", "kind": "daily_stats"},
)

# Order of ``shares``: recsys.contracts.schemas.CUISINES (a test keeps the two in step).
CUISINES = (
    "pizza", "burger", "sushi", "indian", "chinese", "thai",
    "mexican", "italian", "vegan", "dessert", "breakfast", "kebab",
)

user_cuisine_affinity = FeatureView(
    name="user_cuisine_affinity",
    entities=[user],
    ttl=STATS_TTL,
    schema=[
        Field(
            name="shares",
            dtype=Array(Float32),
            description="Smoothed share of the user's feed and menu clicks of the last 28d on each cuisine, "
            "aligned with CUISINES (recsys.contracts.schemas); sums to 1",
        ),
        Field(name="clicks_28d", dtype=Int64, description="Clicks counted in shares (restaurants of a known cuisine)"),
    ],
    source=user_cuisine_affinity_source,
    online=True,
    tags={"owner": OWNER, "surface": "feed,menu", "kind": "daily_stats", "vector_order": ",".join(CUISINES)},
)

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=PROFILE_TTL,
    schema=[
        Field(name="home_cell", dtype=Int32),
        Field(name="platform", dtype=String),
    ],
    source=user_profile_source,
    online=True,
    tags={"owner": OWNER, "surface": "feed,menu", "kind": "profile"},
)

restaurant_profile = FeatureView(
    name="restaurant_profile",
    entities=[restaurant],
    ttl=PROFILE_TTL,
    schema=[
        Field(name="cell", dtype=Int32),
        Field(name="cuisine", dtype=String),
        Field(name="price_level", dtype=Int32),
        Field(name="rating", dtype=Float32),
    ],
    source=restaurant_profile_source,
    online=True,
    tags={"owner": OWNER, "surface": "feed", "kind": "profile"},
)

item_profile = FeatureView(
    name="item_profile",
    entities=[item],
    ttl=PROFILE_TTL,
    schema=[
        Field(name="restaurant_id", dtype=Int64),
        Field(name="category", dtype=String),
        Field(name="price", dtype=Float32),
    ],
    source=item_profile_source,
    online=True,
    tags={"owner": OWNER, "surface": "menu", "kind": "profile"},
)

# ---- written by the training / publishing jobs (sources declared here, files written later) ----
# Embedding dimension is a model property, not a schema property: Array(Float32) of any length.

user_embedding = FeatureView(
    name="user_embedding",
    entities=[user],
    ttl=MODEL_TTL,
    schema=[
        Field(name="embedding", dtype=Array(Float32)),
        Field(name="model_version", dtype=String),
    ],
    source=user_embedding_source,
    online=True,
    tags={"owner": "training", "surface": "menu", "kind": "model"},
)

item_embedding = FeatureView(
    name="item_embedding",
    entities=[item],
    ttl=MODEL_TTL,
    schema=[
        Field(name="embedding", dtype=Array(Float32)),
        Field(name="model_version", dtype=String),
    ],
    source=item_embedding_source,
    online=True,
    tags={"owner": "training", "surface": "menu", "kind": "model"},
)

user_top_restaurants = FeatureView(
    name="user_top_restaurants",
    entities=[user],
    ttl=MODEL_TTL,
    schema=[
        Field(name="restaurant_ids", dtype=Array(Int64)),
        Field(name="scores", dtype=Array(Float32)),
        Field(name="model_version", dtype=String),
    ],
    source=user_top_restaurants_source,
    online=True,
    tags={"owner": "training", "surface": "feed", "kind": "model"},
)

restaurant_candidates = FeatureView(
    name="restaurant_candidates",
    entities=[restaurant],
    ttl=MODEL_TTL,
    schema=[
        Field(name="item_ids", dtype=Array(Int64)),
        Field(name="scores", dtype=Array(Float32)),
        Field(name="model_version", dtype=String),
    ],
    source=restaurant_candidates_source,
    online=True,
    tags={"owner": "training", "surface": "menu", "kind": "model"},
)

restaurant_realtime = FeatureView(
    name="restaurant_realtime",
    entities=[restaurant],
    ttl=REALTIME_TTL,
    schema=[
        Field(name="item_ids", dtype=Array(Int64)),
        Field(name="available", dtype=Array(Int64), description="0/1, aligned with item_ids"),
        Field(name="clicks_1h", dtype=Array(Int64), description="aligned with item_ids"),
    ],
    source=restaurant_realtime_push,
    online=True,
    tags={"owner": "online_updater", "surface": "menu", "kind": "realtime"},
)
