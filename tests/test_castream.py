"""CA-Stream (thesis ch. 3): the stream's maths, identity with GAP, frozen training, resume, explanations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import Dataset

import xai_bridge as xb
from xai_bridge.testing import check_explainer_contract
from xai_bridge_builtins.castream.explainers import RawAttention, gap_vs_ca
from xai_bridge_builtins.castream.model import CAModel, CAStream, CrossAttentionBlock
from xai_bridge_builtins.castream.train import load_castream, read_checkpoint, train_stream


# -- a tiny CNN (any architecture, tapped through forward hooks) ---------------------------------
def _conv(i: int, o: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class TinyNet(nn.Module):
    """16×16 input: stem 16-d 16², layer1 32-d 8², layer2 64-d 4², GAP, fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem, self.layer1, self.layer2 = _conv(3, 16, 1), _conv(16, 32, 2), _conv(32, 64, 2)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layer2(self.layer1(self.stem(x)))).flatten(1))


TINY_TAPS = dict(taps=["stem", "layer1", "layer2"], classifier="fc")


def _tiny(seed: int = 0, num_classes: int = 10) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet(num_classes)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a BN in train mode would show
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these are small models, and on a shared 2-core machine OpenMP's
    barriers under oversubscription make them ~50× slower with 2 threads (measured)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def digits():
    from xai_bridge.data import digits_split

    return digits_split(size=16)


# -- the stream's maths -------------------------------------------------------------------------
def test_cross_attention_block_matches_a_hand_computed_case():
    f = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])  # d=2 channels, p=3 positions
    q = torch.tensor([1.0, 0.0])
    block = CrossAttentionBlock(2, 2)
    with torch.no_grad():
        block.projection.weight.copy_(torch.eye(2))
    out, a = block(q.reshape(1, 1, 2), f.reshape(1, 2, 1, 3))
    scores = np.array([1.0, 2.0, 0.0]) / math.sqrt(2)  # F q / √d, F as p×d rows (1,.5), (2,-1), (0,3)
    expected_a = np.exp(scores) / np.exp(scores).sum()
    expected_ca = f.numpy() @ expected_a  # Fᵀa: weighted average of the position features
    np.testing.assert_allclose(a.reshape(-1).numpy(), expected_a, rtol=1e-6)
    np.testing.assert_allclose(out.reshape(-1).detach().numpy(), expected_ca, rtol=1e-6)


def test_kv_projection_equals_projecting_every_key_and_value():
    torch.manual_seed(3)
    block = CrossAttentionBlock(6, 4, kv_projection=True)
    f, q = torch.randn(2, 6, 3, 5), torch.randn(2, 1, 6)
    out, _ = block(q, f)
    tokens = f.flatten(2).transpose(1, 2)  # B×p×d
    # eq. 3.8 with W^K = key.weight and W^V = value.weightᵀ (the module applies them to q and to Fᵀa)
    wk, wv = block.key.weight, block.value.weight.T
    a = torch.softmax((tokens @ wk @ q.transpose(1, 2)).squeeze(-1) / math.sqrt(6), dim=-1)
    ca = ((tokens @ wv) * a[..., None]).sum(1)
    torch.testing.assert_close(out[:, 0], block.projection(ca), atol=1e-5, rtol=1e-5)


def test_stream_init_and_shapes_follow_the_thesis():
    torch.manual_seed(0)
    stream = CAStream([64, 64, 128, 256, 512], out_features=512)
    assert stream.cls_token.shape == (1, 64)
    assert all(block.projection.bias is None and block.key is None for block in stream.blocks)
    big = CAStream([64], out_features=64, num_queries=4000).cls_token.detach()  # q_0 ~ N(1, 1)
    assert abs(float(big.mean()) - 1.0) < 0.02 and abs(float(big.std()) - 1.0) < 0.02


@pytest.mark.parametrize(
    "start, expected_millions",
    [(0, 6.96), (1, 6.95), (2, 6.82), (3, 6.29), (4, 4.20)],  # thesis Table 3.5, ResNet-50
)
def test_resnet50_stream_parameters_match_the_thesis(start, expected_millions):
    net = torchvision.models.resnet50().eval()
    ca = CAModel(net, start_stage=f"S{start}", probe_size=32)
    assert round(sum(p.numel() for p in ca.stream_parameters()) / 1e6, 2) == expected_millions


def test_parameter_counts_of_resnet18_convnext_and_class_specific_tokens():
    r18 = CAModel(torchvision.models.resnet18().eval(), probe_size=32)
    assert round(sum(p.numel() for p in r18.stream_parameters()) / 1e6, 2) == 0.44  # 12.13M − 11.69M (Table 3.3)
    cs = CAModel(torchvision.models.resnet18().eval(), class_specific=True, probe_size=32)
    extra = sum(p.numel() for p in cs.stream_parameters()) - sum(p.numel() for p in r18.stream_parameters())
    assert extra == 999 * 64  # one 64-d token per ImageNet class (Table 3.6: +0.06M)
    convnext = CAModel(torchvision.models.convnext_small().eval(), probe_size=32)
    assert (
        round(sum(p.numel() for p in convnext.stream_parameters()) / 1e6, 2) == 0.99
    )  # Table 3.3: 51.20 − 50.22 = 0.98


# -- identity with GAP ----------------------------------------------------------------------------
def test_zero_query_attention_is_uniform_and_pools_like_gap():
    block = CrossAttentionBlock(5, 5)
    with torch.no_grad():
        block.projection.weight.copy_(torch.eye(5))
    f = torch.randn(3, 5, 4, 6)
    out, a = block(torch.zeros(3, 1, 5), f)
    torch.testing.assert_close(a, torch.full_like(a, 1 / 24))
    torch.testing.assert_close(out[:, 0], f.mean((2, 3)), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "convnext_tiny"])
def test_identity_init_gives_the_gap_logits_on_torchvision_backbones(arch):
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None, num_classes=7).eval()
    ca = CAModel(net, init="gap").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = ca.run(x, with_gap=True)
        expected = net(x)
    torch.testing.assert_close(out.logits, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.gap_logits, expected, atol=1e-4, rtol=1e-4)
    last = out.attention[-1]
    torch.testing.assert_close(last, torch.full_like(last, 1.0 / last[0, 0].numel()))


def test_identity_on_the_default_model_and_its_documented_taps(model, photos):
    images, _ = photos
    ca = CAModel(model, init="gap").eval()
    assert ca.taps == ("blocks.0", "blocks.2", "blocks.4", "blocks.10", "head")
    assert ca.stage_widths == (16, 24, 40, 112, 1280)
    with torch.no_grad():
        out = ca.run(images[:3])
        expected = model(images[:3])
    torch.testing.assert_close(out.logits, expected, atol=1e-4, rtol=1e-4)
    assert [tuple(a.shape[-2:]) for a in out.attention] == [(112, 112), (56, 56), (28, 28), (14, 14), (7, 7)]
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_stage_options_and_bad_input():
    net = torchvision.models.resnet18(num_classes=4).eval()
    s3 = CAModel(net, start_stage="S3", probe_size=32)
    assert s3.stream.cls_token.shape == (1, 256) and s3.taps == ("layer3", "layer4")
    with pytest.raises(ValueError, match="start_stage"):
        CAModel(net, start_stage=5)
    with pytest.raises(ValueError, match="num_classes"):
        CAModel(net, num_classes=10)
    with pytest.raises(ValueError, match="backbone: CA-Stream does not know"):
        CAModel(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))
    with pytest.raises(ValueError, match="arch"):
        CAModel(net, arch="vgg16")
    with pytest.raises(TypeError, match="backbone"):
        CAModel("resnet18")
    with pytest.raises(ValueError, match="query_class"):
        CAModel(net, probe_size=32)(torch.rand(1, 3, 32, 32), query_class=1)


# -- class-specific tokens ------------------------------------------------------------------------
def test_class_specific_modes_agree_with_running_each_token():
    torch.manual_seed(1)
    net = _tiny(num_classes=4)
    x = torch.rand(3, 3, 16, 16)
    per_class = CAModel(net, class_specific=True, class_query="per_class", **TINY_TAPS).eval()
    predicted = CAModel(net, class_specific=True, **TINY_TAPS).eval()
    predicted.stream.load_state_dict(per_class.stream.state_dict())
    with torch.no_grad():
        table = per_class(x)  # B×C, logit c from the stream run with q_0^c
        for c in range(4):
            torch.testing.assert_close(table[:, c], predicted(x, query_class=torch.full((3,), c))[:, c])
        gap_class = net(x).argmax(-1)  # thesis: at inference the GAP prediction picks the token
        out = predicted.run(x)
        assert torch.equal(out.query_class, gap_class)
        torch.testing.assert_close(out.logits, predicted(x, query_class=gap_class))
        assert per_class.run(x).attention[-1].shape == (3, 4, 4, 4)


# -- training ---------------------------------------------------------------------------------------
def test_a_training_step_changes_only_the_stream():
    net = _tiny()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ca = CAModel(net, **TINY_TAPS)
    stream_before = {k: v.clone() for k, v in ca.stream.state_dict().items()}
    data = (torch.rand(8, 3, 16, 16), torch.arange(8) % 10)
    train_stream(ca, data, epochs=1, batch_size=8, progress=False)
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "a backbone weight or BN statistic changed"
    assert all(not torch.equal(ca.stream.state_dict()[k], v) for k, v in stream_before.items()), (
        "a stream parameter did not train"
    )
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    assert not ca.training and not net.training


class DiesOnce(Dataset):
    """A dataset whose ``die_at``-th item access raises KeyboardInterrupt (a killed run), once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, die_at: int | None) -> None:
        self.images, self.labels, self.die_at, self.calls = images, labels, die_at, 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        self.calls += 1
        if self.die_at is not None and self.calls == self.die_at:
            raise KeyboardInterrupt("simulated kill")
        return self.images[i], self.labels[i]


def test_a_killed_run_resumes_to_the_uninterrupted_weights(tmp_path):
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(24, 3, 16, 16, generator=g), torch.randint(0, 10, (24,), generator=g)
    recipe = dict(epochs=3, batch_size=8, lr=0.05, step_size=2, gamma=0.5, seed=7, progress=False)

    torch.manual_seed(0)
    straight = train_stream(
        CAModel(_tiny(), **TINY_TAPS), DiesOnce(images, labels, None), checkpoint_dir=tmp_path / "a", **recipe
    )

    torch.manual_seed(0)
    killed = CAModel(_tiny(), **TINY_TAPS)
    dying = DiesOnce(images, labels, die_at=24 + 24 + 13)  # in the middle of the third epoch
    with pytest.raises(KeyboardInterrupt):
        train_stream(killed, dying, checkpoint_dir=tmp_path / "b", **recipe)
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert saved["epoch"] == 2 and not (tmp_path / "b" / "stream.pt").exists()
    assert not list((tmp_path / "b").glob(".*tmp"))

    torch.manual_seed(123)  # a fresh process: other random init, same checkpoint
    resumed = train_stream(CAModel(_tiny(), **TINY_TAPS), dying, checkpoint_dir=tmp_path / "b", **recipe)
    assert resumed.resumed_from == 2 and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for key, value in straight.model.stream.state_dict().items():
        assert torch.equal(resumed.model.stream.state_dict()[key], value), key
    assert [h["lr"] for h in resumed.history] == [0.05, 0.05, 0.025]  # StepLR state resumed too

    with pytest.raises(ValueError, match="another recipe"):
        train_stream(CAModel(_tiny(), **TINY_TAPS), dying, checkpoint_dir=tmp_path / "b", **{**recipe, "lr": 0.1})
    reloaded = load_castream(_tiny(), tmp_path / "b" / "stream.pt")
    assert torch.equal(reloaded.stream.cls_token, resumed.model.stream.cls_token)
    assert read_checkpoint(tmp_path / "b" / "stream.pt")["config"]["taps"] == ["stem", "layer1", "layer2"]


def test_stream_reaches_gap_accuracy_on_real_digits(digits):
    from xai_bridge_builtins.castream.digits import accuracy, train_classifier

    train, test = digits
    net = _tiny()
    train_classifier(net, train, epochs=4, progress=False)
    gap_accuracy = accuracy(net, test)
    assert gap_accuracy > 85.0  # a real, trained GAP model
    torch.manual_seed(0)
    result = train_stream(CAModel(net, **TINY_TAPS), train, epochs=6, batch_size=64, val_data=test, progress=False)
    final = result.history[-1]
    assert final["val_gap_accuracy"] == pytest.approx(gap_accuracy)
    assert final["val_ca_accuracy"] >= gap_accuracy - 3.0, result.history
    assert result.history[0]["loss"] > final["loss"]


# -- explanations ---------------------------------------------------------------------------------
def _grads_at(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """∂ y_target / ∂ (output of ``layer``), without touching the parameters' ``.grad``."""
    saved = []
    handle = layer.register_forward_hook(lambda _m, _i, out: saved.append(out))
    try:
        score = model(x)[:, target].sum()
    finally:
        handle.remove()
    return torch.autograd.grad(score, saved[0])[0]


def test_gradients_at_the_last_stage_are_uniform_with_gap_and_not_with_ca(tiny_resnet):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 128, 128)  # layer4 is 4×4
    layer = tiny_resnet.layer4[-1]
    gap = _grads_at(tiny_resnet, layer, x, 3)
    ca = _grads_at(CAModel(tiny_resnet).eval(), layer, x, 3)
    scale = gap.abs().amax()
    assert float(gap.std(dim=(2, 3)).amax()) < 1e-6 * float(scale)  # ∂y/∂F = w_c / p everywhere
    assert float(ca.std(dim=(2, 3)).mean()) > 0.1 * float(ca.abs().mean())


def test_cam_on_a_ca_model_reads_the_gap_models_layer(tiny_resnet, small_images):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    ca = CAModel(tiny_resnet).eval()
    explainer = xb.get_explainer("gradcam", ca)
    assert explainer.target_layer.name == "backbone.layer4.1"
    assert explainer.layer is tiny_resnet.layer4[-1]
    ours = explainer.explain(small_images, 2)
    with pytorch_grad_cam.GradCAM(model=ca, target_layers=[tiny_resnet.layer4[-1]]) as cam:
        expected = cam(input_tensor=small_images, targets=[ClassifierOutputTarget(2)] * 3)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-6)
    check_explainer_contract("gradcam", ca, small_images)


def test_gap_vs_ca_same_maps_at_identity_and_different_after_training(digits):
    from xai_bridge_builtins.castream.digits import train_classifier

    train, test = digits
    net = _tiny(seed=2)
    train_classifier(net, train, epochs=2, progress=False)
    x, y = test.tensors[0][:6], test.tensors[1][:6]
    identity = CAModel(net, init="gap", **TINY_TAPS).eval()
    pair = gap_vs_ca("gradcam", identity, x, y, layer="layer2")
    torch.testing.assert_close(pair["ca"].maps, pair["gap"].maps, atol=1e-5, rtol=1e-4)
    assert pair["ca"].targets.tolist() == y.tolist()

    torch.manual_seed(0)
    trained = train_stream(CAModel(net, **TINY_TAPS), train, epochs=2, batch_size=64, progress=False).model
    pair = gap_vs_ca("gradcam", trained, x, y)  # layer resolved for the hooked backbone: the last tap
    assert pair["ca"].raw.shape == (6, 4, 4)
    assert float((pair["ca"].raw - pair["gap"].raw).abs().amax()) > 1e-3


def test_raw_attention_explainer(tiny_resnet, small_images):
    torch.manual_seed(0)
    ca = CAModel(tiny_resnet).eval()
    maps = check_explainer_contract("castream-attention", ca, small_images)
    explanation = xb.get_explainer("ca-attention", ca).explanation(small_images)
    with torch.no_grad():
        expected = ca.run(small_images).attention[-1][:, 0]
    torch.testing.assert_close(explanation.raw, expected)
    torch.testing.assert_close(explanation.raw.sum((1, 2)), torch.ones(3))
    assert explanation.info["layer"] == "backbone.layer4" and maps.shape == (3, 64, 64)
    # a value known without the model's own forward: init="gap" makes the last attention uniform, 1/p
    uniform = RawAttention(CAModel(tiny_resnet, init="gap").eval()).explanation(small_images).raw
    torch.testing.assert_close(uniform, torch.full((3, 2, 2), 1 / 4))
    first = RawAttention(ca, stage="S0").explanation(small_images)
    assert first.raw.shape == (3, 16, 16) and first.info["stage"] == "S0"
    with pytest.raises(ValueError, match="CA-Stream model"):
        xb.get_explainer("castream-attention", tiny_resnet)
    with pytest.raises(ValueError, match="stage"):
        RawAttention(CAModel(tiny_resnet, start_stage=3).eval(), stage="S1")


def test_raw_attention_of_a_class_specific_model_follows_the_target():
    torch.manual_seed(0)
    ca = CAModel(_tiny(num_classes=3), class_specific=True, **TINY_TAPS).eval()
    x = torch.rand(1, 3, 16, 16)
    maps = [RawAttention(ca).explanation(x, c).raw for c in range(3)]
    with torch.no_grad():
        expected = ca.run(x, query_class=torch.tensor([1])).attention[-1][:, 0]
    torch.testing.assert_close(maps[1], expected)
    first = [RawAttention(ca, stage="S0").explanation(x, c).raw for c in range(3)]  # q_0^c acts directly here
    assert float((first[0] - first[2]).abs().amax()) > 1e-4


# -- command line ---------------------------------------------------------------------------------
def test_cli_trains_resumes_and_rejects_bad_input(tmp_path, capsys):
    from PIL import Image

    from xai_bridge.cli import main
    from xai_bridge.data import digits as digits_tensors

    images, labels = digits_tensors(size=32)
    root = tmp_path / "digits"
    for i in range(24):
        label = int(labels[i]) % 3
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    args = [
        "castream",
        "train",
        "--arch",
        "resnet18",
        "--data",
        str(root),
        "--out",
        str(out),
        "--size",
        "64",
        "--batch-size",
        "8",
        "--quiet",
    ]
    assert main([*args, "--epochs", "1"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["classes"] == ["class0", "class1", "class2"] and len(history["history"]) == 1
    assert read_checkpoint(out / "stream.pt")["config"]["arch"] == "resnet"
    assert main([*args, "--epochs", "2"]) == 0
    assert "resumed after epoch 1" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2

    assert main(["castream", "train", "--arch", "vgg16", "--data", str(root), "--out", str(out), "--quiet"]) == 2
    assert "arch" in capsys.readouterr().err
    assert (
        main(["castream", "train", "--arch", "resnet18", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    )
    assert "--data" in capsys.readouterr().err
    assert main([*args, "--epochs", "0"]) == 2


def test_plugin_registers_the_attention_explainer_and_the_target_layer_hook():
    spec = xb.explainer_spec("castream-attention")
    assert spec.family == "attention" and spec.provider.plugin == "castream"
    assert xb.get_host().resolve_target_layer(torchvision.models.resnet18()) is not None  # not claimed by castream
    from xai_bridge_builtins import castream

    assert castream.resolve_target_layer(torchvision.models.resnet18()) is None


# -- slow: a real torchvision ResNet trained on digits ------------------------------------------
@pytest.mark.slow
def test_resnet_stream_on_digits_matches_gap_accuracy_and_changes_gradcam():
    from xai_bridge.data import digits_split
    from xai_bridge_builtins.castream.digits import accuracy, digits_resnet, train_classifier

    train, test = digits_split(size=32)
    net = digits_resnet()
    train_classifier(net, train, epochs=3, progress=False)
    gap_accuracy = accuracy(net, test)
    assert gap_accuracy > 90.0
    torch.manual_seed(0)
    result = train_stream(CAModel(net), train, epochs=5, batch_size=64, val_data=test, progress=False)
    assert result.history[-1]["val_ca_accuracy"] >= gap_accuracy - 3.0, result.history
    pair = gap_vs_ca("gradcam", result.model, test.tensors[0][:8], test.tensors[1][:8])
    assert pair["ca"].raw.shape == (8, 4, 4) and not torch.allclose(pair["ca"].raw, pair["gap"].raw, atol=1e-3)
