"""Opti-CAM: against a plain reference loop, its invariants, its early stop, and the AG order on real photos."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import xai_bridge as xb
from xai_bridge.cli import main
from xai_bridge.testing import _hook_count, check_explainer_contract
from xai_bridge_builtins.opticam import normalize_maps


def reference_opticam(model, image, target, layer, *, steps, lr=0.1, normalization="range"):
    """One image, written from the thesis (eq. 2.4–2.6) with torch.optim.Adam and no early stop."""
    store = []
    handle = layer.register_forward_hook(lambda m, i, o: store.append(o.detach()))
    with torch.no_grad():
        model(image[None])
    handle.remove()
    feats = store[0][0]  # K×h×w
    u = torch.zeros(feats.shape[0], requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)

    def mask_of(u):
        s = (u.softmax(0)[:, None, None] * feats).sum(0)
        s = F.interpolate(s[None, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        if normalization == "range":
            return (s - s.min()) / (s.max() - s.min())
        if normalization == "max":
            return s / s.max()
        return torch.sigmoid(s)

    for _ in range(steps):
        with torch.enable_grad():
            logit = model((image * mask_of(u))[None])[0, target]
            (g,) = torch.autograd.grad(-logit, u)
        u.grad = g
        opt.step()
    with torch.no_grad():
        return mask_of(u), model((image * mask_of(u))[None])[0, target]


@pytest.mark.parametrize("normalization", ["range", "max", "sigmoid"])
def test_equals_a_reference_loop_with_torch_adam(tiny_resnet, small_images, normalization):
    e = xb.get_explainer("opticam", tiny_resnet, layer="layer3", max_iter=12, normalization=normalization)
    out = e.explanation(small_images[:2], target=[3, 7])
    for i, c in enumerate([3, 7]):
        mask, logit = reference_opticam(
            tiny_resnet, small_images[i], c, tiny_resnet.layer3, steps=12, normalization=normalization
        )
        assert torch.allclose(out.maps[i], mask, atol=2e-4), f"image {i}: map differs from the reference"
        assert torch.allclose(out.info["masked_score"][i], logit, atol=1e-3)
    assert out.info["iterations"].tolist() == [12, 12]
    assert out.raw.shape == (2, 4, 4)  # layer3 of a ResNet-18 at 64×64


def test_normalizations_by_hand():
    s = torch.tensor([[[1.0, 3.0], [2.0, 5.0]]])
    assert torch.equal(normalize_maps(s, "range"), torch.tensor([[[0.0, 0.5], [0.25, 1.0]]]))
    assert torch.equal(normalize_maps(s, "max"), s / 5)
    assert torch.allclose(normalize_maps(s, "sigmoid"), 1 / (1 + torch.exp(-s)))
    flat = torch.full((1, 2, 2), 4.0, requires_grad=True)
    out = normalize_maps(flat, "range")
    assert torch.equal(out, torch.zeros(1, 2, 2))  # n(const) = 0, as the thesis defines n(0)
    (g,) = torch.autograd.grad(out.sum(), flat)
    assert torch.isfinite(g).all()
    with pytest.raises(ValueError, match="normalization"):
        normalize_maps(s, "l2")


def test_any_constant_initialisation_gives_the_same_map(tiny_resnet, small_images):
    maps = [
        xb.get_explainer("opticam", tiny_resnet, layer="layer3", max_iter=10, init=c).explain(small_images, target=1)
        for c in (0.0, 3.7, -12.0)
    ]
    # equal up to float32 rounding of u (≈3e-4 after 10 steps), far below how far the map moved (≈0.36)
    assert torch.allclose(maps[0], maps[1], atol=1e-3)
    assert torch.allclose(maps[0], maps[2], atol=1e-3)
    # the optimisation did move the map away from the uniform start, so the equality says something
    start = xb.get_explainer("opticam", tiny_resnet, layer="layer3", max_iter=0).explain(small_images, target=1)
    assert (maps[0] - start).abs().max() > 0.1


def test_contract_batch_equals_alone_and_model_untouched(tiny_resnet, small_images):
    check_explainer_contract("opticam", tiny_resnet, small_images, layer="layer3", max_iter=5)


def test_batch_equals_alone_exactly_in_float64(tiny_resnet, small_images):
    # In float32 a batched convolution rounds differently (~1e-7) and many Adam steps amplify it;
    # without that rounding noise the batched problem is exactly the per-image one.
    net = copy.deepcopy(tiny_resnet).double()
    images = small_images[:2].double()
    e = xb.get_explainer("opticam", net, layer="layer3", max_iter=25)
    batch = e.explanation(images, target=[3, 6])
    for i, c in enumerate([3, 6]):
        alone = e.explanation(images[i : i + 1], target=c)
        assert torch.allclose(batch.maps[i], alone.maps[0], atol=1e-6)
        assert torch.allclose(batch.info["masked_score"][i], alone.info["masked_score"][0], atol=1e-9)


def test_each_image_stops_on_its_own(tiny_resnet, small_images):
    # A black image masks to black whatever u is: its objective is flat and it stops at once;
    # the others run all their steps, and leave the working batch at no cost to their maps.
    images = torch.cat([small_images[:1], torch.zeros(1, 3, 64, 64), small_images[1:]])
    e = xb.get_explainer("opticam", tiny_resnet, layer="layer3", max_iter=15)
    out = e.explanation(images, target=2)
    assert out.info["iterations"].tolist() == [15, 1, 15, 15]
    assert out.info["converged"].tolist() == [False, True, False, False]
    trace = out.info["objective"]
    assert trace.shape == (4, 16)
    assert torch.isnan(trace[1, 2:]).all() and not torch.isnan(trace[1, :2]).any()
    assert not torch.isnan(trace[[0, 2, 3]]).any()
    alone = e.explain(small_images[1:2], target=2)
    assert torch.allclose(out.maps[2], alone[0], atol=1e-4)


def test_frozen_model_keeps_its_flags(tiny_resnet, small_images):
    frozen = copy.deepcopy(tiny_resnet)
    for p in frozen.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    out = xb.get_explainer("opticam", frozen, layer="layer3", max_iter=5).explanation(small_images[:1], target=0)
    assert out.info["iterations"].tolist() == [5]  # gradients reached u through the input
    assert out.info["objective"][0, -1] > out.info["objective"][0, 0]
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in before.items())


def test_diff_objective_pulls_the_masked_logit_towards_the_original(tiny_resnet, small_images):
    out = xb.get_explainer("opticam", tiny_resnet, layer="layer3", max_iter=20, objective="diff").explanation(
        small_images, target=4
    )
    trace = out.info["objective"]
    assert (trace <= 0).all()  # −|y_c(x) − y_c(masked)|
    base = out.logits[:, 4]
    assert torch.allclose(-(out.info["masked_score"] - base).abs(), trace[:, -1], atol=1e-5)
    assert (trace[:, -1] >= trace[:, 0]).all()


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("max_iter", -1, "max_iter"),
        ("lr", 0, "lr"),
        ("objective", "logit", "objective"),
        ("normalization", "minmax", "normalization"),
        ("progress", "yes", "progress"),
        ("layer", "layer9", "layer9"),
    ],
)
def test_bad_options_are_named(tiny_resnet, option, value, match):
    with pytest.raises(ValueError, match=match):
        xb.get_explainer("opticam", tiny_resnet, **{option: value})


@pytest.fixture(scope="module")
def opticam_on_photos(model, photos):
    images, _ = photos
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    hooks = _hook_count(model)
    out = xb.get_explainer("opticam", model, max_iter=20).explanation(images)
    untouched = (
        all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
        and [p.requires_grad for p in model.parameters()] == flags
        and _hook_count(model) == hooks
        and all(p.grad is None for p in model.parameters())
    )
    return out, untouched


def _masked_probability(model, images, maps, targets):
    low = maps.amin(dim=(1, 2), keepdim=True)
    masks = (maps - low) / (maps.amax(dim=(1, 2), keepdim=True) - low)
    with torch.no_grad():
        return model(images * masks[:, None]).softmax(-1).gather(1, targets[:, None])[:, 0]


def test_real_model_left_exactly_as_it_was(opticam_on_photos):
    _, untouched = opticam_on_photos
    assert untouched


def test_objective_does_not_decrease_between_checkpoints(opticam_on_photos):
    out, _ = opticam_on_photos
    at_checkpoints = out.info["objective"][:, ::10]  # iterations 0, 10, 20
    assert (at_checkpoints.diff(dim=1) >= 0).all(), at_checkpoints
    assert (out.info["masked_score"] == out.info["objective"][:, -1]).all()


def test_masked_probability_beats_gradcam_on_most_photos(model, photos, opticam_on_photos):
    """The thesis's AG order: Opti-CAM's masked image keeps more of the class than Grad-CAM's."""
    images, _ = photos
    out, _ = opticam_on_photos
    grad = xb.get_explainer("gradcam", model).explanation(images)
    assert torch.equal(grad.targets, out.targets)
    p_opti = _masked_probability(model, images, out.maps, out.targets)
    p_grad = _masked_probability(model, images, grad.maps, grad.targets)
    assert torch.allclose(p_opti, out.info["masked_probability"], atol=1e-4)
    wins = int((p_opti > p_grad).sum())
    assert wins > images.shape[0] // 2 + 1, f"Opti-CAM won on {wins} of {images.shape[0]} photos: {p_opti} vs {p_grad}"


def test_cli_explain_with_progress_bar(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                "--explainer",
                "opticam",
                "--images",
                "default",
                "--out",
                str(out),
                "-o",
                "max_iter=2",
                "-o",
                "progress=True",
                "--batch-size",
                "9",
                "--quiet",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "opticam" in err and "2/2" in err  # the iteration bar
    assert len(list(out.glob("*_opticam.npy"))) == 9 and len(list(out.glob("*_opticam_raw.npy"))) == 9
    assert (out / "explanations.json").exists()


# -- faster masked forward passes: channels-last, torch.compile, autocast ----------------------------
def _opticam(model, images, **options):
    return xb.get_explainer("opticam", model, layer="layer3", max_iter=10, **options).explanation(images, target=[3, 7])


def test_channels_last_maps_equal_the_default_within_float32_noise(tiny_resnet, small_images):
    images = small_images[:2]
    formats = [p.is_contiguous() for p in tiny_resnet.parameters()]
    default = _opticam(tiny_resnet, images)
    fast = _opticam(tiny_resnet, images, channels_last=True)
    assert (fast.maps - default.maps).abs().max() < 2e-4
    assert torch.allclose(fast.info["masked_score"], default.info["masked_score"], atol=1e-3)
    assert [p.is_contiguous() for p in tiny_resnet.parameters()] == formats  # the model itself is untouched
    for i, c in enumerate([3, 7]):  # and the default still equals the loop written from the thesis
        mask, _ = reference_opticam(tiny_resnet, images[i], c, tiny_resnet.layer3, steps=10)
        assert (default.maps[i] - mask).abs().max() < 2e-4


def test_bfloat16_maps_stay_close_to_float32(tiny_resnet, small_images):
    images = small_images[:2]
    default = _opticam(tiny_resnet, images)
    low = _opticam(tiny_resnet, images, precision="bfloat16", channels_last=True)
    assert low.maps.dtype == torch.float32 and low.info["masked_score"].dtype == torch.float32
    for a, b in zip(low.maps, default.maps, strict=True):
        assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.9


def test_compile_falls_back_to_eager_with_a_warning(tiny_resnet, small_images, monkeypatch):
    from xai_bridge.errors import ForwardModeWarning

    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    images = small_images[:2]
    with pytest.warns(ForwardModeWarning, match="torch.compile cannot compile Opti-CAM"):
        out = _opticam(tiny_resnet, images, compile=True)
    assert torch.equal(out.maps, _opticam(tiny_resnet, images).maps)


@pytest.mark.slow
def test_compiled_maps_equal_the_default_within_float32_noise(tiny_resnet, small_images):
    images = small_images[:2]
    default = _opticam(tiny_resnet, images)
    compiled = _opticam(tiny_resnet, images, compile=True, channels_last=True)
    assert (compiled.maps - default.maps).abs().max() < 2e-4


@pytest.mark.parametrize(
    "option, value, match",
    [
        ("precision", "float16", "precision: 'float16' is not supported on cpu"),
        ("precision", "half", "precision: 'half' is not known"),
        ("channels_last", "yes", "channels_last"),
        ("compile", 1, "compile"),
    ],
)
def test_bad_speed_options_are_named(tiny_resnet, option, value, match):
    with pytest.raises(ValueError, match=match):
        xb.get_explainer("opticam", tiny_resnet, **{option: value})


def test_every_pass_goes_through_the_explainers_executor(tiny_resnet, small_images):
    # The same batch as above: image 1 stops after one step, the others run 15; the working batch
    # drops image 1 at the checkpoint after step 10. Forward: the feature pass (4), evaluations
    # t = 0..9 on 4 images and t = 10..15 on 3; backward: steps t = 0..9 on 4, t = 10..14 on 3.
    images = torch.cat([small_images[:1], torch.zeros(1, 3, 64, 64), small_images[1:]])
    e = xb.get_explainer("opticam", tiny_resnet, layer="layer3", max_iter=15)
    forward, backward = [], []
    hooks = [
        tiny_resnet.register_forward_hook(lambda m, i, o: forward.append(o.shape[0])),
        tiny_resnet.register_full_backward_hook(lambda m, gi, go: backward.append(go[0].shape[0])),
    ]
    try:
        e.explanation(images, target=2)
    finally:
        for h in hooks:
            h.remove()
    ex = e.executor
    # the explainer's own logits pass (Explainer.explanation) runs outside Opti-CAM's optimisation
    assert ex.samples == 4 + 10 * 4 + 6 * 3 == sum(forward) - 4
    assert ex.backward_samples == 10 * 4 + 5 * 3 == sum(backward)
    e.explain(images[:1], target=2)
    assert ex.samples > 62  # the explainer keeps its executor across calls
