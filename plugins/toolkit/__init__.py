"""Built-in plugin: every method of pytorch-grad-cam and Captum, under one interface.

pytorch-grad-cam's ``ScoreCAM`` and ``AblationCAM`` and Captum's ``Occlusion`` are registered as
``scorecam-toolkit``, ``ablationcam-toolkit`` and ``occlusion-toolkit``: the plain names belong to
the executor-based implementations of the ``perturbation`` plugin, which equal them.

Registration only; the wrappers live in :mod:`xai_bridge_builtins.toolkit.explainers`
and are imported when an explainer is created.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xai_bridge import hookimpl

# name, pytorch-grad-cam class, aliases, description
GRADCAM_METHODS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    (
        "gradcam",
        "GradCAM",
        ("grad-cam",),
        "Grad-CAM: channel weights = spatial mean of the gradients (Selvaraju et al. 2017).",
    ),
    (
        "gradcam++",
        "GradCAMPlusPlus",
        ("gradcampp", "grad-cam++", "gradcam-plusplus"),
        "Grad-CAM++: higher-order gradient weights (Chattopadhay et al. 2018).",
    ),
    ("xgradcam", "XGradCAM", ("xgrad-cam",), "XGrad-CAM: activation-normalised gradient weights (Fu et al. 2020)."),
    (
        "scorecam-toolkit",
        "ScoreCAM",
        ("score-cam-toolkit",),
        "pytorch-grad-cam's own ScoreCAM, kept for comparison (the built-in 'scorecam' runs on the executor).",
    ),
    (
        "ablationcam-toolkit",
        "AblationCAM",
        ("ablation-cam-toolkit",),
        "pytorch-grad-cam's own AblationCAM, kept for comparison (the built-in 'ablationcam' runs on the executor).",
    ),
    ("layercam", "LayerCAM", ("layer-cam",), "LayerCAM: positive gradients weight every location (Jiang et al. 2021)."),
    ("hirescam", "HiResCAM", ("hires-cam",), "HiResCAM: element-wise gradient × activation (Draelos & Carin 2020)."),
    (
        "eigencam",
        "EigenCAM",
        ("eigen-cam",),
        "Eigen-CAM: first principal component of the activations (class-agnostic).",
    ),
    (
        "fullgrad",
        "FullGrad",
        ("full-grad",),
        "FullGrad: input-gradient plus bias-gradients of every layer (Srinivas & Fleuret 2019).",
    ),
)

# name, Captum class, aliases, family, description
CAPTUM_METHODS: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    (
        "saliency",
        "Saliency",
        ("gradients", "vanilla-gradients"),
        "gradient",
        "Captum Saliency: |∂f_c/∂x| (Simonyan et al. 2014).",
    ),
    (
        "input-x-gradient",
        "InputXGradient",
        ("inputxgradient", "gradient-x-input"),
        "gradient",
        "Captum InputXGradient: x ⊙ ∂f_c/∂x.",
    ),
    (
        "integrated-gradients",
        "IntegratedGradients",
        ("ig", "integratedgradients"),
        "gradient",
        "Captum IntegratedGradients from a black baseline (Sundararajan et al. 2017).",
    ),
    (
        "guided-backprop",
        "GuidedBackprop",
        ("guidedbackprop", "guided-backpropagation"),
        "gradient",
        "Captum GuidedBackprop: ReLU backward passes positive gradients only.",
    ),
    ("deeplift", "DeepLift", ("deep-lift",), "gradient", "Captum DeepLift (rescale rule) from a black baseline."),
    ("layer-gradcam", "LayerGradCam", ("captum-gradcam",), "cam", "Captum LayerGradCam on the resolved target layer."),
    (
        "smoothgrad",
        "NoiseTunnel",
        ("smooth-grad",),
        "gradient",
        "Captum NoiseTunnel(Saliency), SmoothGrad (Smilkov et al. 2017).",
    ),
    (
        "occlusion-toolkit",
        "Occlusion",
        ("captum-occlusion",),
        "perturbation",
        "Captum's own Occlusion, kept for comparison (the built-in 'occlusion' runs on the executor).",
    ),
)


def _gradcam_factory(cam_class: str) -> Callable[..., Any]:
    def factory(model: Any, **options: Any) -> Any:
        from xai_bridge_builtins.toolkit.explainers import GradCamExplainer

        return GradCamExplainer(model, cam_class, **options)

    factory.__doc__ = f"pytorch_grad_cam.{cam_class} as an xai-bridge explainer."
    return factory


def _captum_factory(captum_class: str) -> Callable[..., Any]:
    def factory(model: Any, **options: Any) -> Any:
        from xai_bridge_builtins.toolkit.explainers import CAPTUM_EXPLAINERS

        return CAPTUM_EXPLAINERS[captum_class](model, **options)

    factory.__doc__ = f"captum.attr.{captum_class} as an xai-bridge explainer."
    return factory


@hookimpl
def register_explainers(register: Callable[..., None]) -> None:
    for name, cam_class, aliases, description in GRADCAM_METHODS:
        register(
            name,
            _gradcam_factory(cam_class),
            aliases=aliases,
            description=description,
            family="cam",
            needs_layer=cam_class != "FullGrad",
        )
    for name, captum_class, aliases, family, description in CAPTUM_METHODS:
        register(
            name,
            _captum_factory(captum_class),
            aliases=aliases,
            description=description,
            family=family,
            needs_layer=captum_class == "LayerGradCam",
        )
