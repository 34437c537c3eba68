"""Feature services: the versioned feature sets models are trained and served with."""

from feast import FeatureService

from on_demand import price_vs_basket, request_time
from views import (
    item_profile,
    item_stats,
    restaurant_profile,
    restaurant_stats,
    user_profile,
    user_stats,
)

# The menu ranker: (user, restaurant, item) at request time. item_profile.restaurant_id is left
# out on purpose: it would clash with the restaurant join key in the entity rows.
ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[
        user_stats,
        user_profile,
        restaurant_stats,
        restaurant_profile,
        item_stats,
        item_profile[["category", "price"]],
        request_time,
        price_vs_basket,
    ],
    description="Features of the menu re-ranker, version 1.",
    tags={"owner": "ranking", "surface": "menu"},
)
