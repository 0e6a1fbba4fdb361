"""Interpretable-gradients regulariser (thesis ch. 4): error functions by hand, guided gradient
against Captum, the double-backward parameter gradient against an independent computation, the
user's model left untouched, a short real training run on scikit-learn's digits, and the CLI."""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xai_bridge.cli import main as cli_main
from xai_bridge.data import digits_split
from xai_bridge_builtins.gradreg.regularizer import (
    ERROR_FUNCTIONS,
    GradientRegularizer,
    cosine_error,
    evaluate_gradients,
    guided_backprop,
    histogram_error,
    histogram_error_as_printed,
    input_gradients,
    mae_error,
    mse_error,
    relu_backward_switch,
    relu_modules,
    small_cnn,
    train_regularized,
)

# ---------------------------------------------------------------------------------------------
# Known models: in-place ReLUs, and one ReLU module applied several times (as in ResNet's BasicBlock)
# ---------------------------------------------------------------------------------------------


class SharedReluNet(nn.Module):
    """conv → BN → ReLU(in-place) → residual conv block reusing *the same* ReLU twice → pool → linear."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.conv3 = nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        out = self.relu(self.conv2(x))
        out = self.conv3(out) + x
        out = self.relu(out)
        return self.fc(self.pool(out).flatten(1))


def _double(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double()


@pytest.fixture(scope="module")
def shared_net():
    torch.manual_seed(3)
    net = SharedReluNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 1.5)
    return net.eval().double()


@pytest.fixture(scope="module")
def resnet64(tiny_resnet):
    return _double(tiny_resnet).eval()


def _batch(n: int = 3, size: int = 16, classes: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


class _PerImageLoss(nn.Module):
    """Captum differentiates an output column; this module outputs each image's share of L_C (eq. 4.1)."""

    def __init__(self, model: nn.Module, labels: torch.Tensor) -> None:
        super().__init__()
        self.model, self.labels = model, labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.cross_entropy(self.model(x), self.labels, reduction="none") / len(self.labels))[:, None]


def _captum_guided(model: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    from captum.attr import GuidedBackprop

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GuidedBackprop(model).attribute(images.clone().requires_grad_(True), target=target).detach()


# ---------------------------------------------------------------------------------------------
# Error functions (eqs. 4.5–4.8) on hand-worked vectors
# ---------------------------------------------------------------------------------------------

DELTA = torch.tensor([[1.0, 0.0, -1.0, 2.0]])
TARGET = torch.tensor([[3.0, 1.0, 0.0, 1.0]])


@pytest.mark.parametrize(
    "fn, expected",
    [
        (mae_error, (2 + 1 + 1 + 1) / 4),  # |δ−δ'| = 2,1,1,1
        (mse_error, (4 + 1 + 1 + 1) / 4),
        (cosine_error, -5 / math.sqrt(6 * 11)),  # ⟨δ,δ'⟩ = 5, ‖δ‖² = 6, ‖δ'‖² = 11
        (histogram_error, -(0.25 + 0 + 0 + 0.2)),  # |δ|/4 = .25,0,.25,.5 ; |δ'|/5 = .6,.2,0,.2
        (histogram_error_as_printed, -(1 + 0 + 0 + 1) / (4 * 5)),  # eq. 4.8 as printed
    ],
)
def test_error_functions_by_hand(fn, expected):
    got = fn(DELTA.reshape(1, 1, 2, 2), TARGET.reshape(1, 1, 2, 2))
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # one value per image, images independent
    batch = fn(torch.cat([DELTA, 2 * TARGET]), torch.cat([TARGET, TARGET]))
    assert batch[0].item() == pytest.approx(expected, abs=1e-6)


def test_error_function_invariances_and_the_printed_histogram_defect():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 50, generator=g), torch.randn(4, 50, generator=g)
    assert torch.allclose(cosine_error(a, 3 * a), torch.full((4,), -1.0))
    assert torch.allclose(cosine_error(a, -a), torch.full((4,), 1.0))  # minimising E raises similarity
    assert torch.allclose(histogram_error(a, -2 * a), torch.full((4,), -1.0))  # magnitudes only, scale-free
    assert torch.allclose(histogram_error(7 * a, b), histogram_error(a, b))
    assert (histogram_error(a, b) > -1).all() and (histogram_error(a, b) < 0).all()
    assert torch.allclose(mse_error(a, b), ((a - b) ** 2).mean(1)) and torch.allclose(
        mae_error(a, b), (a - b).abs().mean(1)
    )
    # Eq. 4.8 as printed is minimised by *any* small enough δ: −1/‖δ'‖₁, whatever its direction.
    floor = -1 / b.abs().sum(1)
    assert torch.allclose(histogram_error_as_printed(1e-6 * a, b), floor)
    assert torch.allclose(histogram_error_as_printed(-1e-6 * b, b), floor)


# ---------------------------------------------------------------------------------------------
# Guided backpropagation == Captum's GuidedBackprop, with in-place and reused ReLUs
# ---------------------------------------------------------------------------------------------


def _relu_calls(model: nn.Module, images: torch.Tensor) -> int:
    calls = []
    handles = [m.register_forward_hook(lambda *a: calls.append(1)) for m in relu_modules(model)]
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    return len(calls)


@pytest.mark.parametrize("which", ["shared_net", "resnet64"])
def test_guided_gradient_equals_captum(which, request):
    model = request.getfixturevalue(which)
    size, classes = (16, 5) if which == "shared_net" else (64, 10)
    images, labels = _batch(3, size, classes)
    relus = relu_modules(model)
    assert any(m.inplace for m in relus) and _relu_calls(model, images) > len(relus)  # the two traps are present

    # class score (Captum's convention)
    x = images.clone().requires_grad_(True)
    with guided_backprop(model):
        score = model(x).gather(1, labels[:, None]).sum()
    (ours,) = torch.autograd.grad(score, x)
    reference = _captum_guided(model, images, labels)
    assert reference.abs().max() > 1e-4
    torch.testing.assert_close(ours, reference, atol=1e-10, rtol=1e-8)

    # the regulariser's target: the guided gradient of L_C (batch-mean cross-entropy)
    grads = input_gradients(model, images, labels)
    torch.testing.assert_close(
        grads.guided, _captum_guided(_PerImageLoss(model, labels), images, 0), atol=1e-10, rtol=1e-8
    )
    # ... and the standard gradient from the same forward pass is autograd's own
    x = images.clone().requires_grad_(True)
    (native,) = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
    torch.testing.assert_close(grads.standard, native, atol=1e-12, rtol=1e-10)
    cos = F.cosine_similarity(grads.standard.flatten(1), grads.guided.flatten(1), dim=1)
    assert (cos < 0.99).all()  # the two gradients really differ


# ---------------------------------------------------------------------------------------------
# Double backward: ∂(CE + λE)/∂θ against an independent computation on the untouched model
# ---------------------------------------------------------------------------------------------


def _independent_param_grads(model: nn.Module, images, labels, distance: str, lam: float):
    """CE and ∂CE/∂x with plain autograd (no switch), guided target from Captum, then ∂/∂θ."""
    params = [p for p in model.parameters()]
    x = images.clone().requires_grad_(True)
    ce = F.cross_entropy(model(x), labels)
    (standard,) = torch.autograd.grad(ce, x, create_graph=True)
    guided = _captum_guided(_PerImageLoss(model, labels), images, 0)
    error = ERROR_FUNCTIONS[distance](standard, guided, 1e-12).mean()
    g_ce = torch.autograd.grad(ce, params, retain_graph=True)
    g_error = torch.autograd.grad(error, params, allow_unused=True)
    g_error = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_error, strict=False)]
    return g_ce, g_error


def _our_param_grads(model: nn.Module, images, labels, distance: str, lam: float):
    for p in model.parameters():
        p.grad = None
    total, parts = GradientRegularizer(distance, lam).loss(model, images, labels)
    total.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    return grads, parts


@pytest.mark.parametrize("distance", ["cosine", "mse", "mae", "histogram"])
def test_parameter_gradient_contains_the_regulariser(shared_net, distance):
    model = copy.deepcopy(shared_net)
    images, labels = _batch(4)
    lam = 0.37
    g_ce, g_error = _independent_param_grads(model, images, labels, distance, lam)
    with_reg, parts = _our_param_grads(model, images, labels, distance, lam)
    without, _ = _our_param_grads(model, images, labels, distance, 0.0)
    for ours0, ref in zip(without, g_ce, strict=False):
        torch.testing.assert_close(ours0, ref, atol=1e-12, rtol=1e-9)
    for ours, ours0, ref in zip(with_reg, without, g_error, strict=False):
        torch.testing.assert_close(ours - ours0, lam * ref, atol=1e-12, rtol=1e-7)
    contribution = torch.cat([(a - b).flatten() for a, b in zip(with_reg, without, strict=False)]).norm()
    assert contribution > 1e-9  # the regulariser reaches θ (float64 round-off is ~1e-16)
    assert parts["reg"].item() == pytest.approx(
        ERROR_FUNCTIONS[distance](*_standard_and_guided(model, images, labels), 1e-12).mean().item(), rel=1e-9
    )


def _standard_and_guided(model, images, labels):
    grads = input_gradients(model, images, labels)
    return grads.standard, grads.guided


def test_train_mode_resnet_double_backward_matches(tiny_resnet):
    """In-place, reused ReLUs and train-mode BatchNorm (batch statistics) on torchvision's ResNet-18."""
    model = _double(tiny_resnet).train()
    images, labels = _batch(4, 32, 10, seed=5)
    g_ce, g_error = _independent_param_grads(model, images, labels, "cosine", 7.5e-3)
    ours, _ = _our_param_grads(model, images, labels, "cosine", 7.5e-3)
    for a, c, e in zip(ours, g_ce, g_error, strict=False):
        torch.testing.assert_close(a, c + 7.5e-3 * e, atol=1e-11, rtol=1e-7)


# ---------------------------------------------------------------------------------------------
# The user's model is left as it was
# ---------------------------------------------------------------------------------------------


def _fingerprint(model: nn.Module):
    return (
        [
            (
                m.__dict__.get("forward"),
                dict(m._forward_hooks),
                dict(m._forward_pre_hooks),
                dict(m._backward_hooks),
                dict(getattr(m, "_backward_pre_hooks", {})),
            )
            for m in model.modules()
        ],
        {k: v.clone() for k, v in model.state_dict().items()},
        model.training,
        [p.grad for p in model.parameters()],
    )


def test_model_is_unchanged_after_use_and_after_an_error(shared_net):
    model = shared_net
    images, labels = _batch(2)
    with torch.no_grad():
        before_out = model(images)
    before = _fingerprint(model)
    assert all(f[0] is None for f in before[0])

    GradientRegularizer("cosine").loss(model, images, labels)
    input_gradients(model, images, labels)
    with pytest.raises(RuntimeError, match="boom"), relu_backward_switch(model):
        raise RuntimeError("boom")
    with guided_backprop(model), torch.no_grad():
        inside = model(images)

    after = _fingerprint(model)
    assert after[0] == before[0] and after[2] == before[2] and after[3] == before[3]
    assert all(torch.equal(before[1][k], after[1][k]) for k in before[1])
    assert all("forward" not in m.__dict__ for m in relu_modules(model))
    assert type(model.relu).forward is nn.ReLU.forward
    with torch.no_grad():
        assert torch.equal(model(images), before_out) and torch.equal(inside, before_out)


def test_inplace_relu_stays_inplace_inside_the_switch():
    relu = nn.ReLU(inplace=True)
    x = torch.randn(5, requires_grad=True)
    h = x * 1.0
    with relu_backward_switch(nn.Sequential(relu)):
        y = relu(h)
    assert y.data_ptr() == h.data_ptr() and (h >= 0).all()  # modified in place, as the native module does
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, (x > 0).float())


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"distance: 'cosin'.*Did you mean 'cosine'"):
        GradientRegularizer("cosin")
    with pytest.raises(ValueError, match="lam: expected a finite number ≥ 0"):
        GradientRegularizer(lam=-1)
    with pytest.raises(ValueError, match="model: has no torch.nn.ReLU"):
        input_gradients(
            nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.Tanh()), torch.rand(2, 3, 2, 2), torch.tensor([0, 1])
        )
    net = small_cnn(4).eval()
    with pytest.raises(ValueError, match=r"labels: expected shape \(2,\)"):
        input_gradients(net, torch.rand(2, 3, 16, 16), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"labels: class indices must lie in 0..3"):
        input_gradients(net, torch.rand(2, 3, 16, 16), torch.tensor([0, 4]))
    with pytest.raises(TypeError, match="labels: expected an integer tensor"):
        input_gradients(net, torch.rand(2, 3, 16, 16), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="epochs: expected an integer ≥ 1"):
        train_regularized(net, [], epochs=0)


# ---------------------------------------------------------------------------------------------
# A short real training run (scikit-learn digits, 32×32): cosine up, accuracy kept
# ---------------------------------------------------------------------------------------------


def _loader(dataset, seed: int, batch_size: int = 64):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )


def test_short_training_run_raises_gradient_similarity_on_digits():
    """Same pre-trained start, same batches: fine-tune 2 epochs with λ = 0 and with λ = 0.3 (cosine E).

    Measured here (seed 0, one thread): training-batch cosine(∂L/∂x, guided) 0.159 → 0.201 (train
    mode), held-out cosine 0.042 → 0.056 (eval mode, 360 images), accuracy 96.7% → 96.7%. The
    effect is small on this data (see docs/gradreg.md).
    """
    torch.manual_seed(0)
    train, test = digits_split(32, seed=0)
    test_loader = torch.utils.data.DataLoader(test, batch_size=360)
    start = small_cnn(10)
    train_regularized(
        start, _loader(train, 0), 3, lam=0.0, optimizer=torch.optim.Adam(start.parameters(), lr=2e-3), progress=False
    )
    results = {}
    for lam in (0.0, 0.3):
        model = copy.deepcopy(start)
        history = train_regularized(
            model,
            _loader(train, 100),
            2,
            lam=lam,
            optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
            progress=False,
        )
        model.eval()
        images, labels = next(iter(test_loader))
        grads = input_gradients(model, images, labels)
        cos = F.cosine_similarity(grads.standard.flatten(1), grads.guided.flatten(1), dim=1)
        accuracy = (grads.logits.argmax(1) == labels).float().mean().item()
        results[lam] = (cos, accuracy, history)
    (cos0, acc0, hist0), (cos1, acc1, hist1) = results[0.0], results[0.3]
    diff = cos1 - cos0
    t_stat = diff.mean() / (diff.std() / math.sqrt(len(diff)))
    assert hist1[-1]["cosine"] > hist0[-1]["cosine"] + 0.02  # the quantity optimised, on the training batches
    assert diff.mean() > 0.004 and t_stat > 3, (cos0.mean(), cos1.mean(), t_stat)  # held-out images, eval mode
    assert abs(acc1 - acc0) < 0.03 and acc0 > 0.9
    assert evaluate_gradients(model, test_loader)["cosine"] == pytest.approx(cos1.mean().item(), abs=1e-5)


@pytest.mark.slow
def test_longer_training_from_scratch_on_digits():
    """From the same initialisation, 10 epochs: λ = 0.1 raises the optimised (train-mode) cosine, accuracy
    within 2 points.

    The eval-mode test cosine is not asserted: on this run it *fell* (0.059 → −0.012), the
    train/eval BatchNorm gap docs/gradreg.md describes for λ = 1.
    """
    train, test = digits_split(32, seed=0)
    test_loader = torch.utils.data.DataLoader(test, batch_size=360)
    out = {}
    for lam in (0.0, 0.1):
        torch.manual_seed(0)
        model = small_cnn(10)
        history = train_regularized(
            model,
            _loader(train, 0),
            10,
            lam=lam,
            optimizer=torch.optim.Adam(model.parameters(), lr=2e-3),
            progress=False,
            val_loader=test_loader,
        )
        out[lam] = history[-1]
    assert out[0.1]["cosine"] > out[0.0]["cosine"] + 0.03, out
    assert abs(out[0.1]["val_accuracy"] - out[0.0]["val_accuracy"]) < 0.02 and out[0.0]["val_accuracy"] > 0.95, out


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def test_cli_trains_on_digits_and_writes_results(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        cli_main(
            [
                "gradreg",
                "train",
                "--data",
                "digits",
                "--epochs",
                "1",
                "--size",
                "16",
                "--lam",
                "0.01",
                "--distance",
                "mse",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    history = json.loads((out / "history.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert len(history) == 1 and {"ce", "reg", "cosine", "val_accuracy", "val_cosine"} <= set(history[0])
    assert (
        config["distance"] == "mse"
        and config["lam"] == 0.01
        and config["train_images"] == 1437
        and config["val_images"] == 360
    )
    model = small_cnn(10)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    assert "val accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "digits", "--distance", "cosin"], "Did you mean 'cosine'"),
        (["--data", "digits", "--lam", "-1"], "--lam -1.0: expected a number ≥ 0"),
        (["--data", "digits", "--epochs", "0"], "--epochs 0"),
        (["--data", "digits", "--arch", "resnet81"], "--arch: 'resnet81' is not known"),
        (["--data", "digits", "--arch", "efficientnet_b0"], "has no nn.ReLU modules"),
        (["--data", "NOWHERE"], "--data: .* is not a folder"),
        (["--data", "HERE", "--val-fraction", "1.5"], r"--val-fraction: expected a number in \(0, 1\)"),
        pytest.param(
            ["--data", "digits", "--device", "cuda"],
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present"),
        ),
    ],
)
def test_cli_bad_input_is_one_line(args, message, tmp_path, capsys):
    args = [{"NOWHERE": str(tmp_path / "missing"), "HERE": str(tmp_path)}.get(a, a) for a in args]
    assert cli_main(["gradreg", "train", *args, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xai-bridge gradreg: error:") and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(message, err), err
    assert not (tmp_path / "o").exists()
