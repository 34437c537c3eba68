"""Typed, frozen settings of the training step (the ``training`` section of :class:`recsys.config.Config`).

Everything the training step needs is here, built once at the entry point and passed down;
nothing in ``recsys.training`` reads the environment. The seed is ``Config.seed``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConfidenceWeights(_Frozen):
    """confidence(user, entity) = click * clicks + order * orders, summed over the window."""

    click: float = Field(default=1.0, ge=0.0)
    order: float = Field(default=2.0, ge=0.0)

    @model_validator(mode="after")
    def _not_all_zero(self) -> ConfidenceWeights:
        if self.click == 0.0 and self.order == 0.0:
            raise ValueError("confidence weights click=0 and order=0 would give an empty matrix")
        return self


class ALSParams(_Frozen):
    """Hyperparameters of one ALS model (implicit.cpu.als.AlternatingLeastSquares)."""

    factors: int = Field(default=32, gt=0)
    regularization: float = Field(default=0.1, ge=0.0)
    alpha: float = Field(default=10.0, gt=0.0)
    iterations: int = Field(default=15, gt=0)


class SearchSpace(_Frozen):
    """Grid searched on the time-based validation split; ``trials`` points drawn from it, seeded.

    ``trials=0`` (or >= the grid size) evaluates the whole grid.
    """

    factors: tuple[int, ...] = (16, 32, 64)
    regularization: tuple[float, ...] = (0.01, 0.1, 1.0)
    alpha: tuple[float, ...] = (2.0, 10.0, 40.0)
    iterations: tuple[int, ...] = (10, 20)
    trials: int = Field(default=10, ge=0)

    @model_validator(mode="after")
    def _non_empty(self) -> SearchSpace:
        for name in ("factors", "regularization", "alpha", "iterations"):
            if not getattr(self, name):
                raise ValueError(f"search.{name} is empty: give at least one value")
        return self


class RankerSettings(_Frozen):
    """Settings of the ranker step (frozen; seeded through ``train_ranker``'s seed)."""

    c: float = Field(default=1.0, gt=0, description="inverse L2 strength of the logistic regression")
    max_iter: int = Field(default=2000, gt=0)
    max_position: int = Field(default=7, gt=0, description="positions >= this share one column")
    hour_bucket_hours: int = Field(default=3, gt=0, description="width of the category x hour buckets")
    negative_rate: float = Field(default=0.3, gt=0, le=1.0, description="share of non-clicks kept (weighted 1/rate)")
    eval_requests: int = Field(default=1000, ge=0, description="held-out requests for the true-CTR check (0: all)")
    min_auc_lift: float = Field(default=0.0, ge=0.0)
    menu_slots: int = Field(default=8, gt=0)
    ablation_min_gain: float = Field(default=0.001, ge=0.0, description="AUC a group must add not to be flagged")
    cost_sample_rows: int = Field(default=1000, ge=0, description="rows timed per view for retrieval cost (0: skip)")
    # Windows before the end of the data: ranker-train [end - heldout - window, end - heldout),
    # held-out [end - heldout, end); its ALS scores come from a model trained before the window.
    window_days: int = Field(default=7, gt=0)
    heldout_days: int = Field(default=7, gt=0)


class TrainingConfig(_Frozen):
    weights: ConfidenceWeights = ConfidenceWeights()
    feed: ALSParams = ALSParams()
    menu: ALSParams = ALSParams()
    search: SearchSpace = SearchSpace()
    # Time-based validation: train before (end - validation_days), validate on the days after.
    validation_days: int = Field(default=3, gt=0)
    k: int = Field(default=10, gt=0)
    # ALS solver threads. Rows are solved independently, so results do not depend on it
    # (tested); BLAS is pinned to one thread inside fit either way.
    num_threads: int = Field(default=1, ge=0)
    # Users per shard when scoring / taking top-k (the unit of work a distributed run would map).
    shard_users: int = Field(default=2048, gt=0)
    # Held-out users sampled (seeded) for recall/NDCG in the search; 0 = all.
    eval_users: int = Field(default=5000, ge=0)
    ranker: RankerSettings = RankerSettings()
