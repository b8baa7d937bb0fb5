"""occlusion against Captum's Occlusion, which defines it for the field, on a small float64 network."""

from __future__ import annotations

import pytest
import torch
from captum.attr import Occlusion as CaptumOcclusion
from pydantic import ValidationError

from benchsuite.api import PluginError
from tests.plugins.saliency.toy_network import (
    INDEX,
    C,
    ImageObjective,
    assert_runs_with_the_sanity_metrics,
    assert_stacked_equals_alone,
    g,
    images,
    method,
    objective,
)


def test_occlusion_refuses_strides_that_leave_pixels_unoccluded():
    with pytest.raises(ValidationError, match="stride 4 is larger than window 2"):
        method("occlusion", window=2, stride=4)
    # A window cut to a short image's side can fall below the stride too.
    wide = torch.rand(1, C, 4, 16, dtype=torch.float64)
    with pytest.raises(PluginError, match="shorter side, 4 px, which is less than the stride 6"):
        method("occlusion", window=8, stride=6)(objective(), wide, g())


def test_occlusion_is_captums_occlusion_of_the_objective_with_aligned_index():
    f, x = objective(ImageObjective), images()
    want = CaptumOcclusion(f).attribute(
        x, sliding_window_shapes=(C, 3, 3), strides=(C, 2, 2), baselines=0.0, additional_forward_args=(INDEX,)
    )
    got = method("occlusion", window=3, stride=2, perturbations_per_eval=5)(f, x, g())
    # Captum accumulates in float32; ours keeps the input's float64.
    torch.testing.assert_close(got.float(), want.abs().amax(dim=1), rtol=1e-5, atol=1e-7)
    # By hand for one window of image 2: the drop in its own target's similarity.
    occluded = x.clone()
    occluded[:, :, :3, :3] = 0
    drop = f(x, INDEX) - f(occluded, INDEX)
    # Captum accumulates occlusion in float32 whatever the input's dtype.
    torch.testing.assert_close(want[2, :, 0, 0], drop[2].expand(C).float(), rtol=1e-5, atol=1e-7)


def test_stacked_occlusion_equals_one_model_at_a_time():
    assert_stacked_equals_alone("occlusion")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_runs_in_a_suite_with_the_sanity_metrics(tmp_path):
    assert_runs_with_the_sanity_metrics(tmp_path, "occlusion")
