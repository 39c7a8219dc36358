"""hbnn-larq model zoo: binarized VGG-Small and ResNet-18/34, and larq-zoo's QuickNet, Bi-Real Net and
ResNet-E, with HBNN (or any) kernel quantizers.

```python
from hbnn_larq import zoo
model = zoo.get_model("vggsmall", num_classes=10)              # HyperbolicSign in every binary conv
model = zoo.ResNet18(variant="imagenet", num_classes=1000)      # Bi-Real layout, 224 px
zoo.save_pretrained(model, "resnet18.npz")                       # 1 bit per binary weight
model = zoo.ResNet18(variant="imagenet", num_classes=1000, weights="resnet18.npz")
model = zoo.QuickNetSmall(input_shape=(64, 64, 3), num_classes=10)  # larq-zoo's QuickNet, HBNN kernels
```
"""

from hbnn_larq.zoo.pretrained import available_weights, register_weights, registered_path, registered_weights
from hbnn_larq.zoo.weights_file import load_pretrained, save_pretrained
from hbnn_larq.zoo.larq_zoo_models import BinaryResNetE18, BiRealNet, QuickNet, QuickNetLarge, QuickNetSmall
from hbnn_larq.zoo.registry import FIXED_WIDTH_MODELS, MODEL_VARIANTS, MODELS, get_model, model_names, original_recipe
from hbnn_larq.zoo.resnet import ResNet18, ResNet34
from hbnn_larq.zoo.vgg_small import VGGSmall

__all__ = [
    "BiRealNet",
    "BinaryResNetE18",
    "FIXED_WIDTH_MODELS",
    "MODELS",
    "MODEL_VARIANTS",
    "QuickNet",
    "QuickNetLarge",
    "QuickNetSmall",
    "ResNet18",
    "ResNet34",
    "VGGSmall",
    "available_weights",
    "get_model",
    "load_pretrained",
    "model_names",
    "original_recipe",
    "register_weights",
    "registered_path",
    "registered_weights",
    "save_pretrained",
]
