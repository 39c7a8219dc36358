"""Mixed precision: the Keras policies hbnn-larq supports, and quantizers that compute in float32.

Under a mixed policy (`tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")`) a larq
layer reads its latent kernel as a 16-bit tensor (an `AutoCastVariable` inside larq's
`QuantizedVariable`) and hands *that* to its kernel quantizer. A plain `ste_sign` does not care:
the sign of a rounded number is the sign of the number. HBNN does: the exponential map reduces
a whole layer to a norm, an inner product and \\(1 - r\\|p\\|^2\\), and evaluated in bfloat16
(8 significant bits) or float16 (range \\(\\pm 65504\\)) these decide thousands of signs wrongly
per layer, and float16 overflows near the boundary.

`FullPrecisionQuantizer` is the base of every quantizer of this package that computes more than
a sign (`HyperbolicSign`, `IRNetSign`, `ReCUSign`): its own variables (points, schedules,
scales) are float32 whatever the policy, it computes in float32 (float64 if it is given
float64), and it returns the quantized kernel in the dtype it was given, so the convolution
still runs in the policy's compute dtype. The kernel it is given is the latent kernel rounded to
the compute dtype (larq reads it that way); everything after that rounding is float32.

```python
with hbnn_larq.precision.policy_scope("mixed_bfloat16"):
    model = hbnn_larq.zoo.VGGSmall(...)
```

When it pays: bfloat16 on CPUs with AMX or avx512_bf16 (Intel Sapphire Rapids and later), GPUs
and TPUs; float16 on GPUs. On other CPUs both are slower than float32. See `docs` for the
measured step times (`benchmarks/overhead.py --precision ...`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import larq as lq
import tensorflow as tf

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# CPU flags of hardware bfloat16 arithmetic (oneDNN uses them for bf16 convolutions and matmuls).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def check_precision(name: str) -> str:
    """`name` if it is a supported Keras policy name, else a ValueError naming the choices."""
    if name not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {', '.join(map(repr, PRECISIONS))}; got {name!r}.")
    return name


@contextlib.contextmanager
def policy_scope(name: str):
    """Set the global Keras dtype policy to `name` within the block, and restore it after.

    Layers built inside the block keep the policy; models are trained outside it as usual.
    """
    check_precision(name)
    with global_policy(name):
        yield


@contextlib.contextmanager
def global_policy(policy):
    """Make `policy` (a name or a `tf.keras.mixed_precision.Policy`) the global dtype policy
    inside the block, and restore the previous one after (unchecked: see `policy_scope`)."""
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def compute_dtype(dtype) -> tf.DType:
    """The dtype quantizer math runs in for a kernel of `dtype`: float64 stays, the rest is float32."""
    return tf.float64 if tf.as_dtype(dtype) == tf.float64 else tf.float32


def cpu_bf16_flags() -> list[str]:
    """The hardware-bfloat16 flags (`BF16_CPU_FLAGS`) of this machine's CPU ([] if none or unknown)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def variable_dtype(dtype=None) -> str:
    """The variable dtype of a Keras dtype policy given as a name, a `Policy`, its serialized
    config, or None (the global policy): "float32" for "mixed_bfloat16", for instance."""
    if dtype is None:
        return tf.keras.mixed_precision.global_policy().variable_dtype
    if isinstance(dtype, tf.keras.mixed_precision.Policy):
        return dtype.variable_dtype
    if isinstance(dtype, dict):  # a serialized Policy
        dtype = dtype.get("config", {}).get("name")
    return tf.keras.mixed_precision.Policy(tf.as_dtype(dtype).name if isinstance(dtype, tf.DType) else dtype).variable_dtype


class FullPrecisionQuantizer(lq.quantizers.Quantizer):
    """A larq quantizer whose state and arithmetic are float32 under every Keras policy.

    Subclasses implement `quantize(x)` on a float32 (or float64) tensor; `call` casts the kernel
    it is given to that dtype, and casts the result back, so the layer's convolution runs in the
    policy's compute dtype while the quantizer's math does not. Variables created with
    `add_weight` are float32 (the policy's variable dtype, or float64 under a float64 policy)
    and are never auto-cast.
    """

    def __init__(self, **kwargs):
        kwargs["dtype"] = variable_dtype(kwargs.get("dtype"))
        # The kernel arrives as the layer reads it; `call` decides the dtype, not Keras.
        kwargs["autocast"] = False
        super().__init__(**kwargs)

    def quantize(self, inputs: tf.Tensor) -> tf.Tensor:
        """The quantized kernel of `inputs`, a float32/float64 tensor (subclasses implement it)."""
        raise NotImplementedError

    def call(self, inputs):
        if not inputs.dtype.is_floating:
            raise ValueError(f"{type(self).__name__} needs a floating-point kernel, got dtype {inputs.dtype.name}.")
        working = compute_dtype(inputs.dtype if inputs.dtype == tf.float64 else self.dtype)
        return tf.cast(self.quantize(tf.cast(inputs, working)), inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.pop("autocast", None)
        return config
