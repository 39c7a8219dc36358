"""Model registry: the zoo's models by name, for scripts (`train.py`) and the size report."""

from __future__ import annotations

from hbnn_larq.zoo.larq_zoo_models import ENTRIES as LARQ_ZOO_ENTRIES
from hbnn_larq.zoo.larq_zoo_models import BinaryResNetE18, BiRealNet, QuickNet, QuickNetLarge, QuickNetSmall
from hbnn_larq.zoo.larq_zoo_models import original_recipe  # noqa: F401  (re-exported)
from hbnn_larq.zoo.resnet import VARIANTS, ResNet18, ResNet34
from hbnn_larq.zoo.vgg_small import VGGSmall

MODELS = {
    "vggsmall": VGGSmall,
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    # larq-zoo's architectures (built by larq-zoo, imported on first use).
    "quicknet_small": QuickNetSmall,
    "quicknet": QuickNet,
    "quicknet_large": QuickNetLarge,
    "birealnet": BiRealNet,
    "binary_resnet_e18": BinaryResNetE18,
}
# The models with a CIFAR and an ImageNet layout (`variant=`), and the layouts they accept.
MODEL_VARIANTS = {"resnet18": VARIANTS, "resnet34": VARIANTS}
# The models whose channel counts are fixed (`width` must be 1): larq-zoo's.
FIXED_WIDTH_MODELS = frozenset(LARQ_ZOO_ENTRIES)


def model_names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(MODELS)


def get_model(name: str, **kwargs):
    """Build the zoo model `name` with the keyword arguments of its function.

    ```python
    model = get_model("resnet18", input_shape=(32, 32, 3), num_classes=100,
                      kernel_quantizer="ste_sign", kernel_constraint="weight_clip", width=0.5)
    ```

    # Arguments
    name: one of `model_names()` (case-insensitive): `"vggsmall"`, `"resnet18"`, `"resnet34"`
        and larq-zoo's `"quicknet_small"`, `"quicknet"`, `"quicknet_large"`, `"birealnet"`,
        `"binary_resnet_e18"` (`hbnn_larq.zoo.larq_zoo_models`).
    **kwargs: passed to the model function (`input_shape`, `num_classes`, `kernel_quantizer`,
        `kernel_constraint`, `width`, `weights`, ...).

    # Returns
    A `tf.keras.Model`.

    # Raises
    ValueError: if `name` is not a registered model (the message lists the valid names).
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in MODELS:
        raise ValueError(f"`name` must be one of {', '.join(map(repr, model_names()))}; got {name!r}.")
    return MODELS[key](**kwargs)
