"""The report's sentences that read an ANOVA table."""

from __future__ import annotations

import pandas as pd

from benchsuite.report.readings import interaction_reading


def test_reading_says_not_significant_at_and_above_alpha():
    anova = pd.DataFrame({"metric": ["dice"], "term": ["theta:dataset"], "F": [1.0], "p": [0.05], "partial_eta_sq": [0.1]})
    reading = interaction_reading(anova, "dice")
    assert (reading.text, reading.verdict) == (
        "θ × dataset interaction: F=1.00, p=0.05, partial η²=0.100",
        "not significant at 0.05",
    )


def test_reading_explains_a_metric_the_anova_has_no_interaction_for():
    anova = pd.DataFrame({"metric": ["dice"], "term": ["theta"], "F": [1.0], "p": [0.01], "partial_eta_sq": [0.1]})
    assert "single level" in interaction_reading(anova, "dice").text
    assert "Not in the ANOVA table" in interaction_reading(anova, "auroc").text
