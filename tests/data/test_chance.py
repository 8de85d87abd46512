"""`looks_untrained`: an accuracy indistinguishable from guessing (1/classes) on the test split."""

from __future__ import annotations

import pytest

from edge_pipeline.data.chance import chance_accuracy, chance_margin, looks_untrained


@pytest.mark.parametrize("accuracy, classes, samples, untrained", [
    (0.10, 10, 270, True),     # a random-init model on digits' test split
    (0.05, 10, 270, True),     # below chance
    (0.15, 10, 270, True),     # within 3 standard errors (5.5 points on 270 images)
    (0.16, 10, 270, False),    # beyond them: learned something
    (0.9963, 10, 270, False),  # the trained resnet20 of the issue
    (0.25, 10, 30, True),      # a small split: a guesser scores this by luck
    (0.30, 10, 30, False),
    (0.115, 10, 10**6, True),  # a huge split: never closer than 2 points to chance
    (0.13, 10, 10**6, False),
    (0.59, 2, 270, True),      # two classes: chance is 50%
    (0.60, 2, 270, False),
])
def test_chance_level_accuracy_is_untrained(accuracy, classes, samples, untrained):
    assert looks_untrained(accuracy, classes, samples) is untrained


def test_margin_shrinks_with_the_test_split_and_degenerate_inputs_are_not_flagged():
    assert chance_accuracy(10) == pytest.approx(0.1)
    assert chance_margin(10, 30) > chance_margin(10, 270) > chance_margin(10, 10**6) == 0.02
    assert not looks_untrained(0.0, 1, 100)  # one class: no chance level to compare with
    assert not looks_untrained(0.0, 10, 0)   # no test images: nothing measured
