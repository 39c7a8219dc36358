"""`FlipRateMonitor`: how many binary weights change sign, per layer and epoch (paper Fig. 3).

Works with any larq model: it watches every weight-quantized kernel (kernel, depthwise or
pointwise: `hbnn_larq.utils.quantized_kernels`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from hbnn_larq._atomic import atomic_open
from hbnn_larq.utils import quantized_kernels


def _signs(kernel) -> np.ndarray:
    return np.signbit(kernel.quantized())


class FlipRateMonitor(tf.keras.callbacks.Callback):
    """Records, per quantized kernel, the fraction of binary weights whose sign changed during
    each epoch (`flips/<name>`) and since the start of training (`flips_total/<name>`); the name
    is the layer's for a `kernel`, `<layer>/depthwise_kernel` or `<layer>/pointwise_kernel`
    otherwise (`hbnn_larq.utils.QuantizedKernel.name`).

    The values are added to the epoch `logs`, so `CSVLogger`, `TensorBoard` and `History` record
    them. `history` holds the same numbers as a dict of lists. Keras' progress bar would print
    them too, two numbers per layer: pass a `CompactProgbarLogger` with the callbacks to keep only
    the means on that line.

    # Arguments
    layers: the layers whose quantized kernels are watched; default: every layer of the model.
    log_mean: also log `flips/mean` and `flips_total/mean` (weighted by layer size).
    state_path: optional `.npz` file that keeps the signs at the start of training across an
        interrupted and resumed `fit` (e.g. with `BackupAndRestore`), so that `flips_total`
        still counts from the very start; without it a resumed run counts from the resume.
        Written (bit-packed) when training first begins, deleted when it ends.
    """

    def __init__(self, layers=None, log_mean: bool = True, state_path=None):
        super().__init__()
        self._layers = layers
        self.log_mean = log_mean
        self.state_path = Path(state_path) if state_path is not None else None
        self.history: dict[str, list[float]] = {}

    def _watched(self):
        watched = self._layers if self._layers is not None else [self.model]
        return [kernel for layer in watched for kernel in quantized_kernels(layer)]

    def on_train_begin(self, logs=None):
        self._previous = {kernel.name: _signs(kernel) for kernel in self._watched()}
        saved = self._load_initial()
        self._initial = saved or dict(self._previous)
        if self.state_path is not None and saved is None:
            self._save_initial()

    def on_train_end(self, logs=None):
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)

    def _load_initial(self) -> dict[str, np.ndarray] | None:
        """The start-of-training signs saved by an interrupted run, if they fit this model."""
        if self.state_path is None or not self.state_path.exists():
            return None
        with np.load(self.state_path) as npz:
            packed = {name: npz[name] for name in npz.files}
        if set(packed) != set(self._previous) or any(
            packed[name].size != -(-now.size // 8) for name, now in self._previous.items()
        ):
            return None
        return {
            name: np.unpackbits(packed[name], count=now.size).astype(bool).reshape(now.shape)
            for name, now in self._previous.items()
        }

    def _save_initial(self) -> None:
        with atomic_open(self.state_path, "wb") as f:  # a kill mid-write leaves no half file
            np.savez(f, **{name: np.packbits(signs.ravel()) for name, signs in self._initial.items()})

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        totals = {"flips": [0, 0], "flips_total": [0, 0]}
        for kernel in self._watched():
            now = _signs(kernel)
            for key, reference in (("flips", self._previous[kernel.name]), ("flips_total", self._initial[kernel.name])):
                changed = int(np.count_nonzero(now != reference))
                logs[f"{key}/{kernel.name}"] = changed / now.size
                totals[key][0] += changed
                totals[key][1] += now.size
            self._previous[kernel.name] = now
        if self.log_mean and totals["flips"][1]:
            for key, (changed, size) in totals.items():
                logs[f"{key}/mean"] = changed / size
        for key, value in logs.items():
            if key.startswith("flips"):
                self.history.setdefault(key, []).append(float(value))


def is_layer_rate(key: str) -> bool:
    """Whether the log key `key` is one kernel's flip rate (`flips/<name>`, `flips_total/<name>`)."""
    prefix, _, name = key.partition("/")
    return prefix in ("flips", "flips_total") and name not in ("", "mean")


class CompactProgbarLogger(tf.keras.callbacks.ProgbarLogger):
    """Keras' progress bar without the per-layer flip rates of `FlipRateMonitor`.

    With two rates per binarized layer, the epoch line of a deep model would be mostly flip
    rates; this one shows `flips/mean` and `flips_total/mean` only. The per-layer rates stay in
    the epoch `logs`, so `CSVLogger`, `TensorBoard` and `History` still record them. Keras uses
    a `ProgbarLogger` found among the callbacks instead of its own, with `fit`'s `verbose`.
    """

    def __init__(self, count_mode: str = "steps", stateful_metrics=None):
        super().__init__(count_mode=count_mode, stateful_metrics=stateful_metrics)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, {key: value for key, value in (logs or {}).items() if not is_layer_rate(key)})
