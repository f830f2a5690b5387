"""Hyperparameter searches on Optuna: the only part of lmbench that imports optuna.

`settings` (the sweeper's config, checked) and `space` (Hydra's sweep grammar as distributions);
`storage` (where a study lives, from the MLflow store) and `study` (opened; trials of dead
processes reclaimed); `driver` (ask, launch, tell: what lmbench's Hydra sweeper runs); `trial` (the
job's validation observer: reports, and stops a pruned trial); `report` (the trials table and
Optuna's plots for the parent run). The Hydra plugin itself is hydra_plugins/lmbench_search/.
"""
