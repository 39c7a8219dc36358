"""hbnn-larq model zoo: binarized VGG-Small and ResNet-18/34 with HBNN kernel quantizers.

```python
from hbnn_larq import zoo
model = zoo.get_model("vggsmall", num_classes=10)              # HyperbolicSign in every binary conv
model = zoo.ResNet18(variant="imagenet", num_classes=1000)      # Bi-Real layout, 224 px
zoo.save_pretrained(model, "resnet18.npz")                       # 1 bit per binary weight
model = zoo.ResNet18(variant="imagenet", num_classes=1000, weights="resnet18.npz")
```
"""

from hbnn_larq.zoo.pretrained import available_weights, register_weights, registered_path, registered_weights
from hbnn_larq.zoo.weights_file import load_pretrained, save_pretrained
from hbnn_larq.zoo.registry import MODEL_VARIANTS, MODELS, get_model, model_names
from hbnn_larq.zoo.resnet import ResNet18, ResNet34
from hbnn_larq.zoo.vgg_small import VGGSmall

__all__ = [
    "MODELS",
    "MODEL_VARIANTS",
    "ResNet18",
    "ResNet34",
    "VGGSmall",
    "available_weights",
    "get_model",
    "load_pretrained",
    "model_names",
    "register_weights",
    "registered_path",
    "registered_weights",
    "save_pretrained",
]
