"""Feature services: the versioned feature sets models are trained and served with."""

from feast import FeatureService

from on_demand import price_vs_basket, request_time
from views import (
    item_profile,
    item_stats,
    restaurant_profile,
    restaurant_stats,
    user_cuisine_affinity,
    user_profile,
    user_stats,
)

# The menu ranker: (user, restaurant, item) at request time. item_profile.restaurant_id is left
# out on purpose: it would clash with the restaurant join key in the entity rows. The stats views
# come whole, position-debiased columns (*_exam_*, *_dctr_*) included. user_cuisine_affinity is
# not here: the cuisine is the same for every item of a menu request, so it cannot re-rank them
# (it is a feed feature).
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


# The feed blend: (user, restaurant). Distance comes from the two cells (user_profile.home_cell,
# restaurant_profile.cell) on the marketplace grid, in code shared by training and precompute.
feed_ranker_v1 = FeatureService(
    name="feed_ranker_v1",
    features=[
        user_cuisine_affinity[["shares"]],
        user_profile[["home_cell"]],
        restaurant_stats[["feed_dctr_28d"]],
        restaurant_profile[["cell", "cuisine", "price_level", "rating"]],
    ],
    description="Features of the feed blend, version 1.",
    tags={"owner": "ranking", "surface": "feed"},
)
