"""recsys: a hybrid batch + online recommender for a food-delivery marketplace."""

__version__ = "0.1.0"
