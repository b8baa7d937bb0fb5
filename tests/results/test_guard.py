"""The analysis's memory guard: an analysis too large for memory is skipped, named, with its size."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from benchsuite.analysis import guard
from benchsuite.analysis.guard import AnalysisTooLarge, check_memory, readable_bytes
from benchsuite.analysis.mixed import MAX_RANDOM_COLUMNS, mixed_table
from benchsuite.analysis.summary import SKIPPED, analyze_cube
from benchsuite.analysis.terminal import format_summary
from benchsuite.results.synthetic import synthetic_cube


def test_the_message_names_the_analysis_and_the_size() -> None:
    with pytest.raises(AnalysisTooLarge, match=r"^the mixed model would need about 161 GB for its design") as caught:
        check_memory("mixed model", "its design", 161e9)
    assert caught.value.reason.startswith("would need about 161 GB")
    check_memory("mixed model", "its design", guard.MEMORY_BUDGET)  # at the budget is fine


@pytest.mark.parametrize(("n_bytes", "text"), [(512, "512 B"), (2_500, "2.5 kB"), (3.4e8, "340 MB"), (1.61e11, "161 GB")])
def test_sizes_read_as_people_read_them(n_bytes: float, text: str) -> None:
    assert readable_bytes(n_bytes) == text


def test_the_follow_ups_grid_is_refused_before_its_frame_is_made() -> None:
    # 921,600 cells × 64 images: the refusal comes from the cube's sizes, so a small stand-in with those sizes will do.
    cube = synthetic_cube(datasets=16, thetas=360, seeds=1, methods=2, encoders=8, images=64)
    cube["auroc"][0, 1, 0, 0, 0, 0] = np.nan  # unbalanced: no closed form, so statsmodels would have to fit it
    with pytest.raises(AnalysisTooLarge, match=r"mixed model would need about .* GB for its design of 5,898,240 per-image rows"):
        mixed_table(cube, metrics=["auroc"], harmonics={"auroc": 4})


def test_too_many_random_effects_are_refused_for_time_as_well() -> None:
    cube = synthetic_cube(datasets=2, thetas=400, seeds=2, images=2)  # 800 runs per dataset
    cube["auroc"][0, 1, 0, 0, 0, 0] = np.nan  # unbalanced: no closed form
    assert MAX_RANDOM_COLUMNS < 2 + 800
    with pytest.raises(AnalysisTooLarge, match="systems of 802 random effects per dataset"):
        mixed_table(cube, metrics=["auroc"], harmonics={"auroc": 4})


def test_analyze_skips_only_what_does_not_fit_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "MEMORY_BUDGET", 10_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tables = analyze_cube(synthetic_cube(datasets=2, thetas=12, seeds=2, images=4))
    for name in ("anova", "mixed"):
        assert tables[name].empty and tables[name].attrs[SKIPPED].startswith("would need about"), name
    assert len(tables["periodicity"]) and len(tables["curve_test"])
    text = format_summary(tables).replace("\n", " ")
    assert "Skipped: ANOVA; each would need about 27.6 kB for its design of 48 cells × 24 columns" in text
    assert "Skipped: mixed model; each would need about" in text
