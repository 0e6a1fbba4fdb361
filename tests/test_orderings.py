"""The published orderings of SPEC §4, through evaluate() on the real default model and the photos.

The values differ from the papers (another model, nine photos); the directions must not.
"""

from __future__ import annotations

import math

import pytest

import xai_bridge as xb
from xai_bridge.protocols import get_protocol


@pytest.fixture(scope="module")
def results(model, photos):
    images, names = photos
    protocol = get_protocol("default", step=1 / 8)  # coarse deletion steps keep Δσ's six curves cheap
    explainers = [
        xb.get_explainer("gradcam", model),
        xb.get_explainer("opticam", model, max_iter=30),
        xb.get_explainer("fakecam", model),
        xb.get_explainer("random", model),
    ]
    metrics = ["average_drop", "average_gain", "average_increase", xb.get_metric("delta", metric="deletion_auc")]
    return xb.evaluate(model, images, explainers, metrics, protocol=protocol, image_ids=names, progress=False)


def mean(results, explainer, metric):
    return results.mean_std(explainer, metric)[0]


def test_fakecam_has_the_lowest_average_drop_and_no_gain(results):
    ad = {e: mean(results, e, "average_drop") for e in ("gradcam", "opticam", "fakecam")}
    assert min(ad, key=ad.get) == "fakecam", ad
    assert mean(results, "fakecam", "average_gain") < 2.0


def test_opticam_gains_well_above_gradcam(results):
    assert mean(results, "opticam", "average_gain") > mean(results, "gradcam", "average_gain") + 10


def test_delta_is_near_zero_for_random_maps_and_clearly_not_for_gradcam(results):
    random_delta = mean(results, "random", "delta(deletion_auc)")
    gradcam_delta = mean(results, "gradcam", "delta(deletion_auc)")
    assert abs(random_delta) < 0.03, random_delta
    assert gradcam_delta < -0.03 and abs(gradcam_delta) > 2 * abs(random_delta), (gradcam_delta, random_delta)
    assert not math.isnan(random_delta)
