"""DP-Net (Sicre et al., ICIP 2023): the module's identities, losses, frozen training, cache, resume, explanations."""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import xai_bridge as xb
from xai_bridge.testing import check_explainer_contract
from xai_bridge_builtins.dpnet import training as train_module
from xai_bridge_builtins.dpnet.data import load_dataset, read_list_file
from xai_bridge_builtins.dpnet.explainers import class_parts, explain_parts
from xai_bridge_builtins.dpnet.features import extract_features
from xai_bridge_builtins.dpnet.model import (
    DPNet,
    assignment_loss,
    backbone_fingerprint,
    class_specific_loss,
    load_dpnet,
    near_chance,
    orthogonality_loss,
    own_part_share,
    part_overlap,
    save_dpnet,
)
from xai_bridge_builtins.dpnet.training import train


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: small models on a shared 2-core machine are ~30× slower with 2 (measured)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _conv(i: int, o: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class TinyNet(nn.Module):
    """A small CNN no plugin knows: stem 16², block 8² (32-d), block 4² (64-d), GAP, fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem, self.block1, self.block2 = _conv(3, 16, 1), _conv(16, 32, 2), _conv(32, 64, 2)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block2(self.block1(self.stem(x)))).flatten(1))


def _tiny(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a BN in train mode would show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _data(n: int = 24, classes: int = 3, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % classes


@pytest.fixture(scope="module")
def resnet_dpnet():
    torch.manual_seed(0)
    net = DPNet(
        torchvision.models.resnet18().eval(), parts_per_class=2, num_classes=4, class_names=["a", "b", "c", "d"]
    )
    with torch.no_grad():
        net.classifier.bias.uniform_(-1, 1)  # a non-zero bias, so "logit − bias" is a real check
    return net.eval()


# -- the module -----------------------------------------------------------------------------------
def test_shapes_and_the_definitions_of_s_b_and_logits(resnet_dpnet):
    net = resnet_dpnet
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = net.run(x, with_global=True)
        feats = net.features(x)
    assert feats.shape == (2, 512, 2, 2) and net.layer_name == "layer4.1" and net.num_parts == 8
    assert out.scores.shape == (2, 8, 2, 2) and out.bag.shape == (2, 8) and out.logits.shape == (2, 4)
    u = net.parts / net.parts.norm(dim=1, keepdim=True)
    s = torch.einsum("pd,bdr->bpr", u, feats.flatten(2))
    torch.testing.assert_close(out.scores.flatten(2), s)
    torch.testing.assert_close(out.bag, s.amax(-1))
    torch.testing.assert_close(out.logits, out.bag @ net.classifier.weight.T + net.classifier.bias)
    torch.testing.assert_close(out.global_logits, net.global_head(feats.mean((2, 3))))
    torch.testing.assert_close(net(x), out.logits)
    assert out.best_region.shape == (2, 8) and torch.equal(s.argmax(-1), out.best_region)


def test_part_rows_are_unit_norm_on_every_forward(resnet_dpnet):
    net = DPNet(resnet_dpnet.backbone, parts_per_class=1, num_classes=3, feature_dim=512)
    with torch.no_grad():
        net.parts.mul_(torch.tensor([[7.0], [0.01], [123.0]]))
    norms = net.part_vectors().norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(3))
    x = torch.rand(1, 3, 64, 64)
    before = net.eval().run(x).scores
    with torch.no_grad():
        net.parts.mul_(5.0)  # rescaling U changes nothing: its rows are normalised in the forward
    torch.testing.assert_close(net.run(x).scores, before)


def test_contributions_sum_to_the_logit_minus_the_bias(resnet_dpnet):
    x = torch.rand(3, 3, 64, 64)
    for target in (None, 2, [0, 3, "b"]):
        ex = explain_parts(resnet_dpnet, x, target)
        picked = ex.logits.gather(1, ex.targets[:, None])[:, 0]
        torch.testing.assert_close(ex.contributions.sum(1), picked - ex.bias, atol=1e-4, rtol=1e-5)
    assert ex.targets.tolist() == [0, 3, 1]
    assert (
        ex.maps.shape == (3, 8, 2, 2) and ex.boxes.shape == (3, 8, 4) and ex.upsampled([0, 1]).shape == (3, 2, 64, 64)
    )
    box = ex.boxes[0, 0].tolist()  # the best cell of a 2×2 grid on 64² is one of the four 32² quadrants
    assert box[2] - box[0] == 32 and box[3] - box[1] == 32 and box[0] in (0, 32) and box[1] in (0, 32)
    top = ex.top_parts(0, 3)
    assert [r["contribution"] for r in top] == sorted((r["contribution"] for r in top), reverse=True)


def _small_vgg() -> nn.Module:
    """A torchvision ``VGG`` with two conv blocks; built without VGG's 100 M-parameter classifier (slow to draw)."""
    from torchvision.models.vgg import VGG, make_layers

    vgg = VGG.__new__(VGG)
    nn.Module.__init__(vgg)
    vgg.features, vgg.avgpool = make_layers([16, "M", 32, "M"]), nn.AdaptiveAvgPool2d(1)
    vgg.classifier = nn.Linear(32, 10)
    return vgg.eval()


def test_the_backbones_the_host_resolves(model):
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    torch.manual_seed(0)
    cases = [
        (model, "head", 1280, (1, 3, 64, 64), (2, 2)),  # the embedded EfficientNet-Lite0
        (_small_vgg(), "features.4", 32, (1, 3, 64, 64), (32, 32)),  # the last ReLU, before the last max pool
        (
            ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]).eval(),
            "features.3",
            32,
            (1, 3, 64, 64),
            (8, 8),
        ),
    ]
    for backbone, layer, dim, shape, grid in cases:
        net = DPNet(backbone, parts_per_class=1, num_classes=2).eval()
        assert (net.layer_name, net.feature_dim) == (layer, dim)
        assert net.run(torch.rand(shape)).scores.shape[-2:] == grid
        assert xb.find_layer(net).name == f"backbone.{layer}"  # the plugin's resolve_target_layer hook
    assert DPNet(model, parts_per_class=1, num_classes=2).normalize == "none"
    assert DPNet(cases[1][0], parts_per_class=1, num_classes=2).normalize == "imagenet"


def test_bad_arguments_say_which_and_what_was_expected():
    net = _tiny()
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"parts_per_class: expected a positive integer"):
            DPNet(net, layer="block2", parts_per_class=bad, num_classes=3)
        with pytest.raises(ValueError, match=r"num_classes: expected a positive integer"):
            DPNet(net, layer="block2", parts_per_class=2, num_classes=bad)
    with pytest.raises(ValueError, match="num_classes"):
        DPNet(net, layer="block2", parts_per_class=2)
    with pytest.raises(ValueError, match="class_names: got 2 names for num_classes=3"):
        DPNet(net, layer="block2", num_classes=3, class_names=["x", "y"])
    with pytest.raises(ValueError, match="layer: no plugin knows the target layer of a TinyNet"):
        DPNet(net, num_classes=3)
    with pytest.raises(ValueError, match=r"layer: 'block3' is not a module.*block2"):
        DPNet(net, layer="block3", num_classes=3)
    with pytest.raises(ValueError, match="layer: 'fc' gives"):
        DPNet(net, layer="fc", num_classes=3)
    with pytest.raises(ValueError, match="backbone: is in training mode"):
        DPNet(_tiny().train(), layer="block2", num_classes=3)
    with pytest.raises(TypeError, match="backbone: expected a torch.nn.Module"):
        DPNet("resnet18", num_classes=3)


def test_the_backbone_stays_in_eval_mode_and_refuses_to_run_in_training_mode():
    net = DPNet(_tiny(), layer="block2", parts_per_class=2, num_classes=3)
    net.train()
    assert net.training and net.classifier.training and not net.backbone.training
    assert not any(m.training for m in net.backbone.modules())
    net.backbone.train()  # someone unfreezes it by hand
    with pytest.raises(ValueError, match="backbone: is in training mode"):
        net.run(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="backbone is in training mode"):
        train(net, _data(), epochs=1, progress=False)


# -- the losses, on hand-worked cases ---------------------------------------------------------------
def test_orthogonality_loss():
    assert orthogonality_loss(torch.eye(4, 6)).item() == 0.0  # orthogonal parts
    rotation = torch.tensor([[math.cos(0.3), math.sin(0.3)], [-math.sin(0.3), math.cos(0.3)]])
    assert orthogonality_loss(3.0 * rotation).item() == pytest.approx(0.0, abs=1e-12)  # scale does not matter
    # u1 = (1, 0), u2 = (1, 1)/√2, u3 = (0, 1): u1ᵀu2 = u2ᵀu3 = 1/√2, u1ᵀu3 = 0 → 2·(½ + ½)/3² = 2/9
    u = torch.tensor([[1.0, 0.0], [5.0, 5.0], [0.0, 2.0]])
    assert orthogonality_loss(u).item() == pytest.approx(2 / 9)
    assert orthogonality_loss(torch.ones(2, 3)).item() == pytest.approx(2 / 4)  # identical parts


def test_assignment_loss():
    one_hot = torch.tensor([[[50.0, -50.0, 50.0], [-50.0, 50.0, -50.0]]])  # P=2, R=3: every region decisively assigned
    assert assignment_loss(one_hot).item() == pytest.approx(0.0, abs=1e-30)
    assert assignment_loss(torch.zeros(2, 5, 3, 3)).item() == pytest.approx(math.log(5))  # undecided regions
    # one region with softmax (½, ½) → log 2, another one-hot → 0: mean log 2 / 2
    s = torch.tensor([[[0.0, 80.0], [0.0, 0.0]]])
    assert assignment_loss(s).item() == pytest.approx(math.log(2) / 2)


def test_class_specific_loss():
    q, c = 2, 3
    block = torch.block_diag(*[torch.tensor([[0.7, -1.3]])] * c)  # V zero outside the class blocks
    assert class_specific_loss(block, q).item() == 0.0
    # each row of ones: 4 of its 6 equal weights lie off its own 2 parts → 4/6 per class, 2/3 on average
    assert class_specific_loss(torch.ones(c, q * c), q).item() == pytest.approx(2 / 3)
    # q = 1, C = 2: row 0 has |−2| of |1| + |−2| = 3 off its part, row 1 has |3| of 7 → (2/3 + 3/7) / 2 = 23/42
    v = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    assert class_specific_loss(v, 1).item() == pytest.approx(23 / 42)
    assert class_specific_loss(5.0 * v, 1).item() == pytest.approx(23 / 42)  # a share: the scale of V does not matter
    # an all-zero row puts no weight on its own parts (own share 0, so it adds 1); row 1 is all on its own part
    assert class_specific_loss(torch.tensor([[0.0, 0.0], [0.0, 2.0]]), 1).item() == pytest.approx(0.5)
    assert class_specific_loss(torch.ones(1, 3), 3).item() == 0.0  # one class: nothing is off-block
    # the share it is one minus: |3| of 4 and |2| of 4 on the own part
    assert own_part_share(torch.tensor([[3.0, -1.0], [2.0, 2.0]]), 1).tolist() == [0.75, 0.5]


def test_part_overlap_and_the_near_chance_threshold():
    assert part_overlap(torch.eye(3, 5)).item() == 0.0
    # u1 = (1, 0), u2 = (1, 1)/√2, u3 = (0, 1): |u1ᵀu2| = |u2ᵀu3| = 1/√2, |u1ᵀu3| = 0 → 2·√2 / (3·2) = √2/3
    u = torch.tensor([[1.0, 0.0], [5.0, 5.0], [0.0, 2.0]])
    assert part_overlap(u).item() == pytest.approx(math.sqrt(2) / 3)
    assert part_overlap(torch.tensor([[1.0, 0.0], [-3.0, 0.0]])).item() == pytest.approx(1.0)  # opposite: |−1|
    # a quarter of the way from chance (1/C) to 1: 32.5 % for 10 classes, 62.5 % for 2
    assert near_chance(0.32, 10) and not near_chance(0.33, 10)
    assert near_chance(0.62, 2) and not near_chance(0.63, 2)


# -- training -------------------------------------------------------------------------------------
def test_training_changes_only_the_heads_and_never_the_backbone():
    backbone = _tiny()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    flags = [p.requires_grad for p in backbone.parameters()]
    fingerprint = backbone_fingerprint(backbone)
    result = train(
        backbone, _data(), layer="block2", parts_per_class=2, epochs=2, batch_size=8, val_fraction=0, progress=False
    )
    after = backbone.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "a backbone weight or BatchNorm statistic changed"
    assert [p.requires_grad for p in backbone.parameters()] == flags and all(
        p.grad is None for p in backbone.parameters()
    )
    assert backbone_fingerprint(backbone) == fingerprint and not backbone.training
    net = result.model
    assert not net.training and net.part_vectors().norm(dim=1).allclose(torch.ones(6))
    assert [row["epoch"] for row in result.history] == [1, 2] and "val_parts_accuracy" not in result.history[0]


def test_lambdas_are_options_and_zero_disables_a_term():
    data = _data()
    common = dict(layer="block2", parts_per_class=2, epochs=1, batch_size=8, val_fraction=0, progress=False)
    off = train(_tiny(), data, lambda_orth=0, lambda_assign=0, lambda_cs=0, **common).history[0]
    assert off["orth"] == off["assign"] == off["cs"] == 0.0 and off["loss"] == pytest.approx(off["ce"])
    on = train(_tiny(), data, lambda_orth=2.0, lambda_assign=0.5, lambda_cs=3.0, **common).history[0]
    assert on["orth"] > 0 and on["assign"] > 0 and on["cs"] > 0
    assert on["loss"] == pytest.approx(on["ce"] + 2.0 * on["orth"] + 0.5 * on["assign"] + 3.0 * on["cs"], rel=1e-5)
    for bad in (dict(lambda_cs=-1), dict(lambda_orth=float("nan")), dict(init="pca"), dict(lr=0), dict(epochs=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            train(_tiny(), data, **{**common, **bad})


def _patch_backbone() -> nn.Module:
    """A frozen 4×4 patch embedding (3 → 8 channels, 4×4 regions at 16²) whose features are large enough that
    the part scores differ and every constraint has a gradient to follow in a few steps."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4))
    with torch.no_grad():
        net[0].weight.mul_(10.0)
    return net.eval()


#: constraint -> (its λ in the test, the loss function the training loop calls, what it is measured on)
CONSTRAINTS = {
    "lambda_orth": (1.0, "orthogonality_loss", "parts"),
    "lambda_assign": (1.0, "assignment_loss", "scores"),
    "lambda_cs": (100.0, "class_specific_loss", "weight"),
}


def _terms_after_training(**lambdas: float) -> dict[str, float]:
    """Three epochs (9 Adam steps) on 24 small images from one seed, every λ 0 unless given; each term of the result."""
    recipe = dict(layer="0", parts_per_class=2, epochs=3, batch_size=8, lr=1e-2, val_fraction=0, seed=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DP-Net: .* near chance")
        result = train(
            _patch_backbone(),
            _data(24),
            progress=False,
            **{"lambda_orth": 0.0, "lambda_assign": 0.0, "lambda_cs": 0.0, **lambdas},
            **recipe,
        )
    net, x = result.model, result.train_features.features.float()
    with torch.no_grad():
        return {
            "lambda_orth": float(orthogonality_loss(net.parts)),
            "lambda_assign": float(assignment_loss(net.head(x).scores)),
            "lambda_cs": float(class_specific_loss(net.classifier.weight, net.parts_per_class)),
        }


@pytest.mark.parametrize("constraint", list(CONSTRAINTS))
def test_each_constraint_is_trained_it_lowers_its_own_term(constraint, monkeypatch):
    # From the same start and the same batches, training with the constraint's λ on must end with that term
    # lower than training with λ = 0. A term cut out of the gradient (computed on detached tensors, or left out
    # of the loss) leaves both runs identical, and this fails.
    lam, loss_name, _ = CONSTRAINTS[constraint]
    off = _terms_after_training()[constraint]
    on = _terms_after_training(**{constraint: lam})[constraint]
    # measured drops (9 steps): L⊥ −11 %, LA −2.2 %, LCS −37 %; required: about half of that
    required = {"lambda_orth": 0.05, "lambda_assign": 0.01, "lambda_cs": 0.2}[constraint]
    assert on < (1 - required) * off, (constraint, on, off)

    # the check itself can fail: the same training with the term's input detached does not lower it at all
    real = getattr(train_module, loss_name)
    monkeypatch.setattr(train_module, loss_name, lambda tensor, *rest: real(tensor.detach(), *rest))
    assert _terms_after_training(**{constraint: lam})[constraint] == off


def test_kmeans_init_puts_each_class_block_on_that_class_regions():
    from xai_bridge_builtins.dpnet.features import FeatureSet
    from xai_bridge_builtins.dpnet.training import kmeans_parts

    # class 0's regions point along e0 or e1, class 1's along e2 or e3 (4-d features, 2×2 grid)
    feats = torch.zeros(4, 4, 2, 2)
    feats[0, 0], feats[1, 1] = 2.0, 3.0
    feats[2, 2], feats[3, 3] = 1.0, 5.0
    fs = FeatureSet(feats, torch.tensor([0, 0, 1, 1]), torch.arange(4))
    parts = kmeans_parts(fs, 2, 2, seed=0)
    assert parts.norm(dim=1).allclose(torch.ones(4))
    assert sorted(parts[:2].argmax(1).tolist()) == [0, 1] and sorted(parts[2:].argmax(1).tolist()) == [2, 3]


def test_features_are_cached_and_read_without_a_backbone_pass(tmp_path):
    net = DPNet(_tiny(), layer="block2", parts_per_class=1, num_classes=3)
    calls = []
    handle = net.backbone.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        data = _data(10)
        first = extract_features(net, data, cache_dir=tmp_path, batch_size=4, progress=False)
        assert not first.cached and len(calls) == 3 and first.path.is_file()
        again = extract_features(net, data, cache_dir=tmp_path, batch_size=4, progress=False)
        assert again.cached and len(calls) == 3, "the second run ran the backbone"
        assert torch.equal(again.features, first.features) and torch.equal(again.labels, first.labels)
        other = extract_features(net, _data(10, seed=1), cache_dir=tmp_path, batch_size=4, progress=False)
        assert not other.cached and other.key != first.key  # other images, other key
        result = train(net, data, epochs=1, cache_dir=tmp_path, val_fraction=0, progress=False)
        assert result.train_features.cached and len(calls) == 6  # only the probe-free extraction of `other` ran
    finally:
        handle.remove()
    changed = DPNet(_tiny(seed=1), layer="block2", parts_per_class=1, num_classes=3)  # other weights → other key
    assert not extract_features(changed, data, cache_dir=tmp_path, progress=False).cached


def test_training_on_digits_beats_chance_by_a_wide_margin(tmp_path):
    from xai_bridge_builtins.castream.digits import digits_resnet

    backbone = digits_resnet()  # a random-weight ResNet-10 with a CIFAR stem: layer3 is 4×4 at 16²
    result = train(
        backbone,
        "digits",
        layer="layer3",
        image_size=16,
        parts_per_class=2,
        epochs=10,
        lr=1e-2,
        cache_dir=tmp_path,
        progress=False,
    )
    final = result.history[-1]
    assert len(result.train_features) == 1437 and len(result.val_features) == 360
    assert final["val_parts_accuracy"] > 60.0, result.history  # chance is 10 %
    assert result.history[0]["loss"] > final["loss"]
    assert result.model.class_names == [str(i) for i in range(10)]
    assert result.model.meta == {"image_size": 16, "data": "digits"}


def test_a_killed_run_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    data = _data(24)
    recipe = dict(
        layer="block2", parts_per_class=2, epochs=3, batch_size=8, lr=0.01, seed=7, val_fraction=0.25, progress=False
    )
    straight = train(_tiny(), data, checkpoint_dir=tmp_path / "a", **recipe)

    real_step, calls = train_module._step, []

    def dying_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3 + 3 + 2:  # 18 training images, 3 batches per epoch: the middle of epoch 3
            raise KeyboardInterrupt("simulated kill")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny(), data, checkpoint_dir=tmp_path / "b", **recipe)
    monkeypatch.setattr(train_module, "_step", real_step)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert saved["epoch"] == 2 and not (tmp_path / "b" / "dpnet.pt").exists()
    assert not list((tmp_path / "b").glob(".*tmp"))

    torch.manual_seed(123)  # a fresh process: another global RNG state, same checkpoint
    resumed = train(_tiny(), data, checkpoint_dir=tmp_path / "b", **recipe)
    assert resumed.resumed_from == 2 and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert resumed.history[-1]["val_parts_accuracy"] == straight.history[-1]["val_parts_accuracy"]

    with pytest.raises(ValueError, match="another recipe"):
        train(_tiny(), data, checkpoint_dir=tmp_path / "b", **{**recipe, "lambda_cs": 0.5})
    with pytest.raises(ValueError, match="another configuration"):
        train(_tiny(), data, checkpoint_dir=tmp_path / "b", **{**recipe, "parts_per_class": 3})
    again = train(_tiny(), data, checkpoint_dir=tmp_path / "c", **recipe)  # deterministic with the seed
    assert torch.equal(again.model.parts, straight.model.parts)


def test_save_and_load_record_the_model_and_refuse_mismatches(tmp_path, resnet_dpnet):
    path = save_dpnet(resnet_dpnet, tmp_path / "dpnet.pt")
    stored = torch.load(path, weights_only=True)
    cfg = stored["config"]
    assert (cfg["backbone"], cfg["layer"], cfg["parts"], cfg["parts_per_class"], cfg["num_classes"]) == (
        "ResNet",
        "layer4.1",
        8,
        2,
        4,
    )
    assert cfg["class_names"] == ["a", "b", "c", "d"] and not any(k.startswith("backbone.") for k in stored["state"])
    again = load_dpnet(path, resnet_dpnet.backbone)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), resnet_dpnet(x))
    with pytest.raises(ValueError, match="num_classes: .* C=4 classes, got num_classes=5"):
        load_dpnet(path, resnet_dpnet.backbone, num_classes=5)
    with pytest.raises(ValueError, match="class_names: .* C=4 classes, got 3 names"):
        load_dpnet(path, resnet_dpnet.backbone, class_names=["a", "b", "c"])
    torch.manual_seed(5)
    with pytest.raises(ValueError, match="backbone: differs from the one"):
        load_dpnet(path, torchvision.models.resnet18().eval())
    with pytest.raises(ValueError, match="not a saved DP-Net"):
        torch.save({"format": "something else"}, tmp_path / "other.pt")
        load_dpnet(tmp_path / "other.pt", resnet_dpnet.backbone)


# -- data -----------------------------------------------------------------------------------------
def _write_folder(root, classes=3, per_class=4, corrupt=0):
    from PIL import Image

    g = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(g.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    for i in range(corrupt):
        (root / "class0" / f"broken{i}.png").write_bytes(b"not a png at all")
    return root


def test_corrupt_images_are_skipped_counted_and_named(tmp_path):
    root = _write_folder(tmp_path / "folder", corrupt=2)
    net = DPNet(_tiny(), layer="block2", parts_per_class=1, num_classes=3)
    with pytest.warns(UserWarning, match=r"skipped 2 of 14 images"):
        fs = extract_features(net, load_dataset(root, size=16).dataset, progress=False)
    assert len(fs) == 12 and len(fs.skipped) == 2 and "broken0.png" in fs.skipped[0]
    assert sorted(fs.indices.tolist()) == fs.indices.tolist()
    listing = tmp_path / "list.txt"
    listing.write_text(
        "# path label\n"
        + "".join(f"folder/class{c}/{i}.png class{c}\n" for c in range(3) for i in range(4))
        + "folder/missing.png class1\n"
    )
    samples, classes = read_list_file(listing)
    assert classes == ["class0", "class1", "class2"] and len(samples) == 13
    with pytest.warns(UserWarning, match="skipped 1 of 13"):
        result = train(net, listing, image_size=16, epochs=1, val_fraction=0.25, progress=False)
    assert len(result.train_features.skipped) == 1 and "missing.png" in result.train_features.skipped[0]
    assert len(result.train_features) + len(result.val_features) == 12


def test_empty_one_class_and_unreadable_datasets_are_refused(tmp_path):
    net = DPNet(_tiny(), layer="block2", parts_per_class=1, num_classes=2)
    images, labels = _data(6, classes=1)
    with pytest.raises(ValueError, match="data: has 1 class .* at least 2"):
        train(_tiny(), (images, labels), layer="block2", epochs=1, progress=False)
    with pytest.raises(ValueError, match="data: is empty"):
        train(
            _tiny(),
            (torch.rand(0, 3, 16, 16), torch.zeros(0, dtype=torch.long)),
            layer="block2",
            epochs=1,
            progress=False,
        )
    with pytest.raises(ValueError, match="model: the DP-Net has C=2 classes but the data has 3"):
        train(net, _data(6), epochs=1, progress=False)
    root = tmp_path / "broken"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "x.png").write_bytes(b"junk")
    (root / "b" / "y.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="none of the 2 images could be read"):
        train(net, root, image_size=16, epochs=1, progress=False)
    with pytest.raises(ValueError, match="neither 'digits', an ImageFolder root nor a list file"):
        train(net, tmp_path / "nowhere", epochs=1, progress=False)
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("a.png 0\nb.png cat\n")
    with pytest.raises(ValueError, match="mixes class indices and class names"):
        read_list_file(bad_list)


# -- explanations ---------------------------------------------------------------------------------
def test_explainers_honour_the_contract(resnet_dpnet):
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    cam = check_explainer_contract("dpnet-cam", resnet_dpnet, x)
    check_explainer_contract("dpnet-part", resnet_dpnet, x)
    check_explainer_contract("dpnet-part", resnet_dpnet, x, part=5)
    ex = explain_parts(resnet_dpnet, x)
    expected = torch.einsum("bp,bphw->bhw", resnet_dpnet.classifier.weight[ex.targets], ex.maps)
    raw = xb.get_explainer("dpnet-cam", resnet_dpnet).explanation(x).raw
    torch.testing.assert_close(raw, expected)
    assert cam.shape == (3, 64, 64)
    part = xb.get_explainer("dpnet-part", resnet_dpnet).explanation(x, target=1)
    best = (resnet_dpnet.classifier.weight[1] * ex.bag).argmax(1)
    assert torch.equal(part.info["part"], best)
    torch.testing.assert_close(part.raw, ex.maps[torch.arange(3), best])
    with pytest.raises(ValueError, match=r"part: expected None .* 0\.\.7"):
        xb.get_explainer("dpnet-part", resnet_dpnet, part=8)
    with pytest.raises(ValueError, match="explains a DP-Net"):
        xb.get_explainer("dpnet-cam", torchvision.models.resnet18().eval())


def test_gradcam_on_a_dpnet_is_the_relu_of_its_class_map_over_r(resnet_dpnet):
    # y_c = Σ_p V_cp max_r u_pᵀx_r + bias, so ∂y_c/∂x_r = Σ_p V_cp u_p [r = r*_p]; Grad-CAM's channel weights are the
    # mean over the R regions, Σ_p V_cp u_p / R, and its map Σ_d α_d x_dr = M_c(r) / R, before its ReLU.
    x = torch.rand(2, 3, 96, 96)  # layer4 is 3×3: R = 9
    explainer = xb.get_explainer("gradcam", resnet_dpnet)
    assert explainer.target_layer.name == "backbone.layer4.1"
    gradcam = explainer.explanation(x, target=[1, 2]).raw
    cam = xb.get_explainer("dpnet-cam", resnet_dpnet).explanation(x, target=[1, 2]).raw
    torch.testing.assert_close(gradcam, cam.clamp(min=0) / 9, rtol=1e-4, atol=1e-5)


def test_class_parts_rank_by_the_class_weights(resnet_dpnet):
    ranked = class_parts(resnet_dpnet, "c")
    weights = resnet_dpnet.classifier.weight[2].detach()
    assert ranked.class_index == 2 and ranked.class_name == "c"
    assert torch.equal(ranked.weights, weights[ranked.parts]) and ranked.weights.tolist() == sorted(
        weights.tolist(), reverse=True
    )
    assert ranked.owners.tolist() == (ranked.parts // 2).tolist() and 0 <= ranked.own_share <= 1
    with pytest.raises(ValueError, match="out of range"):
        class_parts(resnet_dpnet, 4)


def test_figures(tmp_path):
    from xai_bridge_builtins.dpnet.figures import class_figure, image_figure

    data = _data(12)
    net = train(_tiny(), data, layer="block2", parts_per_class=2, epochs=1, val_fraction=0, progress=False).model
    fig = image_figure(net, data[0][0], top_k=2, path=tmp_path / "image.png")
    assert len(fig.axes) == 3 and (tmp_path / "image.png").stat().st_size > 1000
    fig = class_figure(net, 1, data, top_parts=2, crops=3, path=tmp_path / "class.png")
    assert len(fig.axes) == 1 + 2 * 3 and (tmp_path / "class.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="top_k"):
        image_figure(net, data[0][0], top_k=7)


# -- command line and plugin ----------------------------------------------------------------------
def test_cli_trains_resumes_explains_and_rejects_bad_input(tmp_path, capsys):
    from xai_bridge.cli import main

    root = _write_folder(tmp_path / "folder", per_class=5)
    out = tmp_path / "run"
    args = [
        "dpnet",
        "train",
        "--data",
        str(root),
        "--backbone",
        "resnet18",
        "--size",
        "32",
        "--parts-per-class",
        "2",
        "--out",
        str(out),
        "--quiet",
        "--threads",
        "1",
    ]
    assert main([*args, "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    assert "computed and cached" in text and "epoch   1" in text and "own-part share" in text
    assert "(mean over 3 classes" in text and "chance 33.3%)" in text
    history = json.loads((out / "history.json").read_text())
    assert (
        history["config"]["class_names"] == ["class0", "class1", "class2"]
        and history["config"]["backbone"] == "resnet18"
    )
    assert main([*args, "--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "resumed after epoch 1" in text and "read from the cache" in text

    figures = tmp_path / "figures"
    image = root / "class1" / "0.png"
    assert (
        main(
            [
                "dpnet",
                "explain",
                "--model",
                str(out / "dpnet.pt"),
                str(image),
                "--index",
                "0",
                "--class",
                "class2",
                "--crops",
                "2",
                "--top-parts",
                "2",
                "--out",
                str(figures),
            ]
        )
        == 0
    )
    assert {p.name for p in figures.iterdir()} == {"0_parts.png", "item0_parts.png", "class_class2.png", "parts.json"}
    assert "own-part share:" in capsys.readouterr().out
    report = json.loads((figures / "parts.json").read_text())
    assert len(report["images"]["0"]["top_parts"]) == 3
    capsys.readouterr()

    assert main([*args, "--parts-per-class", "0"]) == 2
    assert "--parts-per-class 0: expected a positive integer" in capsys.readouterr().err
    assert main(["dpnet", "train", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "--data:" in capsys.readouterr().err
    assert main(["dpnet", "train", "--data", str(root), "--backbone", "resnet9000", "--out", str(out)]) == 2
    assert "--backbone: 'resnet9000' is not known" in capsys.readouterr().err
    assert main(["dpnet", "explain", "--model", str(out / "dpnet.pt"), "--data", "digits", "--index", "0"]) == 2
    assert "--data: has 10 classes but the DP-Net has 3" in capsys.readouterr().err
    assert main(["dpnet", "explain", "--model", str(tmp_path / "none.pt"), "--index", "0"]) == 2
    assert "--model" in capsys.readouterr().err


def _train_parser() -> argparse.ArgumentParser:
    from xai_bridge_builtins.dpnet.cli import add_dpnet_parser

    parser = argparse.ArgumentParser(prog="xai-bridge")
    add_dpnet_parser(parser.add_subparsers())
    dpnet_parser = parser._subparsers._group_actions[0].choices["dpnet"]  # type: ignore[union-attr]
    return dpnet_parser._subparsers._group_actions[0].choices["train"]


def test_every_train_option_has_help_and_shows_its_default():
    parser = _train_parser()
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert {"--epochs", "--batch-size", "--seed", "--lambda-cs"} <= {s for a in options for s in a.option_strings}
    for action in options:
        flag = action.option_strings[0]
        assert action.help and action.help.strip(), f"{flag} has no help text"
        if action.required or isinstance(action, argparse._StoreTrueAction):
            continue  # nothing to default
        if action.default is None:
            assert "(default: " in action.help, f"{flag} does not say what happens when it is left out"
        else:
            assert "%(default)s" in action.help, f"{flag} does not show its default {action.default!r}"
    text = parser.format_help()
    assert "(default: 30)" in text and "(default: 64)" in text and "(default: 0)" in text
    assert "paper: 10" not in text


def test_the_cli_defaults_are_train_defaults():
    signature = inspect.signature(train).parameters
    defaults = vars(_train_parser().parse_args(["--data", "digits", "--out", "x"]))
    pairs = {
        "epochs": "epochs",
        "batch_size": "batch_size",
        "seed": "seed",
        "lr": "lr",
        "weight_decay": "weight_decay",
        "lambda_orth": "lambda_orth",
        "lambda_assign": "lambda_assign",
        "lambda_cs": "lambda_cs",
        "parts_per_class": "parts_per_class",
        "init": "init",
        "cache_dtype": "cache_dtype",
        "val_fraction": "val_fraction",
    }
    for cli_name, train_name in pairs.items():
        assert defaults[cli_name] == signature[train_name].default, cli_name


def test_progress_is_one_line_per_stage_and_off_when_stderr_is_not_a_terminal(capsys):
    recipe = dict(layer="block2", parts_per_class=2, epochs=2, batch_size=8, val_fraction=0, lambda_cs=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DP-Net: .* near chance")
        train(_tiny(), _data(), **recipe)  # progress=None: stderr is captured here, not a terminal
        assert capsys.readouterr().err == ""
        train(_tiny(), _data(), progress=True, **recipe)
    updates = [line for line in re.split(r"[\r\n]", capsys.readouterr().err) if line.strip()]
    # one bar per stage, no bar per epoch over its batches
    assert {line.split(":")[0] for line in updates} == {"DP-Net features (frozen backbone)", "DP-Net epochs"}


def test_history_records_the_own_part_share_and_training_warns_near_chance():
    recipe = dict(layer="block2", parts_per_class=2, epochs=1, batch_size=8, val_fraction=0, progress=False)
    with pytest.warns(UserWarning, match=r"own parts, near chance \(33.3 %\).*Raise lambda_cs \(now 0\)"):
        result = train(_tiny(), _data(), lambda_cs=0, **recipe)
    expected = own_part_share(result.model.classifier.weight.detach(), 2).mean().item() * 100
    assert result.history[-1]["own_share"] == pytest.approx(expected)


def test_plugin_registers_explainers_command_and_layer_hook_and_imports_cheaply():
    spec = xb.explainer_spec("dpnet-cam")
    assert (
        spec.provider.plugin == "dpnet"
        and spec.family == "cam"
        and xb.explainer_spec("dp-net-part").name == "dpnet-part"
    )
    from xai_bridge_builtins import dpnet

    assert dpnet.resolve_target_layer(torchvision.models.resnet18()) is None  # not claimed by dpnet
    assert dpnet.train is train and dpnet.DPNet is DPNet and dpnet.explain_parts is explain_parts
    code = (
        "import sys, xai_bridge_builtins.dpnet, xai_bridge as xb; xb.list_explainers(); print('torch' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


# -- slow: the embedded ImageNet EfficientNet-Lite0, frozen, on digits ------------------------------
@pytest.mark.slow
def test_parts_on_the_frozen_imagenet_model_learn_digits(model, tmp_path):
    result = train(
        model, "digits", image_size=96, parts_per_class=5, epochs=8, lr=3e-3, cache_dir=tmp_path, progress=False
    )
    final = result.history[-1]
    assert result.model.layer_name == "head" and result.train_features.grid == (3, 3)
    assert final["val_parts_accuracy"] > 85.0 and final["val_global_accuracy"] > 85.0, result.history
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), xb.default_model().state_dict().values(), strict=True)
    )
    images = torch.stack([load_dataset("digits", size=96).held_out[i][0] for i in range(4)])
    ex = explain_parts(result.model, images)
    picked = ex.logits.gather(1, ex.targets[:, None])[:, 0]
    torch.testing.assert_close(ex.contributions.sum(1), picked - ex.bias, atol=1e-3, rtol=1e-5)
