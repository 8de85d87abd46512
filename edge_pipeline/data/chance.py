"""Is an accuracy a result, or what guessing scores? (torch-free: the export stage and the reports use it)

A model that was never trained (random init, `epochs: 0` without weights) or that collapsed scores
about 1/classes on a balanced test split. Its exported files cannot be judged against it (an int8
copy of noise agrees with it by chance) and its figures are not a result: callers say "untrained".
"""

from __future__ import annotations

import math

# Guessing on n test images scores 1/classes with a binomial standard error; a model within this
# many standard errors of chance is indistinguishable from a guesser on that split.
CHANCE_STANDARD_ERRORS = 3.0
# ...and never closer than this to chance (a huge test split must not make 10.5% "trained").
MIN_CHANCE_MARGIN = 0.02


def chance_accuracy(num_classes: int) -> float:
    """Top-1 accuracy of a uniform guess."""
    return 1.0 / num_classes


def chance_margin(num_classes: int, samples: int) -> float:
    """How far above chance an accuracy on `samples` test images must be to be more than luck."""
    chance = chance_accuracy(num_classes)
    return max(MIN_CHANCE_MARGIN, CHANCE_STANDARD_ERRORS * math.sqrt(chance * (1.0 - chance) / samples))


def looks_untrained(accuracy: float, num_classes: int, samples: int) -> bool:
    """True when `accuracy` (0..1, on `samples` test images of `num_classes` classes) is below chance
    or within `chance_margin` above it. Unknown or degenerate inputs (one class, no samples) say False."""
    if num_classes < 2 or samples < 1:
        return False
    return accuracy <= chance_accuracy(num_classes) + chance_margin(num_classes, samples)
