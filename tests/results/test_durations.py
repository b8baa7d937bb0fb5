"""Durations as the report and the terminal write them."""

from __future__ import annotations

import pytest

from benchsuite.results.durations import readable_duration


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.04, "0.0 s"), (119.9, "119.9 s"), (120, "2.0 min"), (7199, "120.0 min"), (7200, "2.0 h")]
)
def test_a_duration_reads_in_the_unit_that_keeps_its_number_small(seconds, text):
    assert readable_duration(seconds) == text
