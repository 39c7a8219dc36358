"""hbnn-larq: Hyperbolic Binary Neural Networks (Chen et al., TNNLS 2024) for Larq and LCE.

Importing this package sets `TF_USE_LEGACY_KERAS=1` if TensorFlow is not imported yet (larq
needs Keras 2) and raises an ImportError that explains the fix if `tf.keras` is Keras 3. It also
lets tf-keras 2.16 build seeded layers on Python 3.12 (`hbnn_larq._keras`) and silences two
larq messages that are false alarms for its quantizers (`hbnn_larq._quiet`).
"""

from hbnn_larq._keras import ensure_legacy_keras, ensure_seeded_initializers_work

ensure_legacy_keras()
ensure_seeded_initializers_work()

from hbnn_larq._quiet import silence_false_alarms  # noqa: E402

silence_false_alarms()

from hbnn_larq import geometry, manifold_parameters, optimizers, precision, utils  # noqa: E402
from hbnn_larq.manifold_parameters import PoincareBallConstraint  # noqa: E402
from hbnn_larq.export import bake_quantized_kernels, convert_keras_model, op_names  # noqa: E402
from hbnn_larq.flips import CompactProgbarLogger, FlipRateMonitor  # noqa: E402
from hbnn_larq.geometry import PoincareBall  # noqa: E402
from hbnn_larq.hyperbolize import hyperbolize  # noqa: E402
from hbnn_larq.ir_net import IRNetSign  # noqa: E402
from hbnn_larq.normalized_sign import NormalizedSign  # noqa: E402
from hbnn_larq.optimizers import RiemannianOptimizer  # noqa: E402
from hbnn_larq.quantizers import HyperbolicSign, hyperbolic_quantizers  # noqa: E402
from hbnn_larq.recu import ReCUSign  # noqa: E402
from hbnn_larq.schedules import QuantizerSchedule, scheduled_quantizers  # noqa: E402
from hbnn_larq.selection import ChartSelection  # noqa: E402

# Last: the zoo registers its custom layers, so `tf.keras.models.load_model` of any saved zoo
# model works after a bare `import hbnn_larq`.
from hbnn_larq import zoo  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ChartSelection",
    "CompactProgbarLogger",
    "FlipRateMonitor",
    "HyperbolicSign",
    "IRNetSign",
    "NormalizedSign",
    "PoincareBall",
    "PoincareBallConstraint",
    "QuantizerSchedule",
    "ReCUSign",
    "RiemannianOptimizer",
    "bake_quantized_kernels",
    "convert_keras_model",
    "geometry",
    "hyperbolic_quantizers",
    "hyperbolize",
    "manifold_parameters",
    "op_names",
    "optimizers",
    "precision",
    "scheduled_quantizers",
    "utils",
    "zoo",
]
