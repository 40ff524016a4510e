"""The colour reader used by the demo-model tests reads the training pictures right."""

from __future__ import annotations

import random

import numpy as np

from tests.demo_colours import picture_colours
from tools.train_demo_model import COLOURS, SHAPES, draw


def test_reads_every_combination_of_the_training_pictures() -> None:
    rng = random.Random(0)
    for shape in SHAPES:
        for foreground in COLOURS:
            for background in COLOURS:
                if foreground == background:
                    continue
                pixels = np.asarray(draw(shape, foreground, background, rng))
                assert picture_colours(pixels) == (background, foreground), (shape, foreground, background)


def test_plain_picture_has_no_foreground() -> None:
    assert picture_colours(np.full((64, 64, 3), COLOURS["green"], dtype=np.uint8)) == ("green", None)
