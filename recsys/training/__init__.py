"""Training: interaction matrices from the logs, ALS, hyperparameter search, baselines, metrics.

Modules: ``interactions`` (log -> CSR + id maps), ``model`` (the fit/score/save/load contract),
``als`` (implicit's CPU ALS behind that contract), ``baselines`` (popularity, per restaurant,
per cell, random), ``search`` (time-split hyperparameter search), ``metrics`` (recall@k, NDCG@k,
true CTR on the simulator), ``params`` (TrainingConfig), ``errors``.
"""
