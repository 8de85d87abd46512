"""The names of the compression choices a recipe can make, in one torch-free place.

Stage configs (`stages/prune.py`) type their fields with these, and the algorithms
(`compress/pruning`) register their implementations under the same names (a test checks both
sides agree), so a new criterion is added here once.
"""

from __future__ import annotations

from typing import Literal, get_args

Criterion = Literal["l1", "l2", "bn_scale", "taylor", "random"]
Allocation = Literal["per_layer", "global"]

CRITERIA: tuple[str, ...] = get_args(Criterion)
ALLOCATIONS: tuple[str, ...] = get_args(Allocation)

# Knowledge distillation (`finetune.distill`): what the student matches, and how features are compared.
Objective = Literal["logits", "features", "logits+features"]
FeatureLoss = Literal["mse", "cosine"]

OBJECTIVES: tuple[str, ...] = get_args(Objective)
FEATURE_LOSSES: tuple[str, ...] = get_args(FeatureLoss)
