"""`ChartSelection`: the EPC step that picks each layer's active exponential chart.

The final HBNN paper (EPC) trains a cluster of points \\(F = \\{F_1, \\dots, F_t\\}\\) per layer,
maps \\(\\tilde w\\) to the cluster \\(\\{\\exp_{F_j}(\\tilde w)\\}\\), obtains an "optimal"
chart \\(F_i\\) from it and keeps training \\(\\tilde w\\) through \\(F_i\\). Its full text is not
available; *how* \\(i\\) is chosen is our interpretation, offered as named criteria (the
`selection` argument of `HyperbolicSign`):

- `"geometric"` (default): the chart whose mapped weight is farthest from the boundary.
- `"loss"`: per layer, greedily in layer order, the chart with the lowest loss on a fixed probe
  batch (current chart included, so the probe loss never rises). BatchNorm uses batch statistics
  for the probe and its moving averages are restored afterwards. It costs t forward passes per
  layer per round.
- `"nearest"`: the point nearest (geodesic distance) to the current constrained weight.
- `"flips"`: the chart that flips the most binary weights.
- `"random"`: a chart drawn uniformly at random every round (from the callback's seed, the
  epoch and the layer's position). A control: with `on_switch="reexpress"` it separates what a
  criterion's choice buys from what changing the trained point at all does.
- `"never"`: chart 0 stays active.

Every criterion scores chart \\(j\\) by the current \\(\\tilde w\\) mapped through \\(F_j\\): the kernel a
switch adopts with `on_switch="keep"`. With the default `on_switch="reexpress"` the switch
rewrites \\(\\tilde w\\) so that the binary kernel does not change; the choice then only decides which
point the following steps train through (the benchmarks compare both: `docs/results.md`, "EPC's chart switches"), and the
latent kernel's optimizer slots (momentum) are reset, since they hold a
direction in the old chart's coordinates (`hbnn_larq.optimizers.reset_slots`).

Every `HyperbolicSign` is selected on its own: a `QuantDepthwiseConv2D`'s depthwise kernel and a
`QuantSeparableConv2D`'s depthwise and pointwise kernels as well as `kernel`s.

Selection runs at the start of every `every`-th epoch (including the first). During the first
`warmup_epochs` epochs the active chart is drawn uniformly at random for every batch, so that
every point is trained before greedy selection starts (inactive points get no gradient).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from hbnn_larq._atomic import write_json
from hbnn_larq.optimizers import reset_slots
from hbnn_larq.quantizers import hyperbolic_kernels


class ChartSelection(tf.keras.callbacks.Callback):
    """Keras callback that selects the active chart of every EPC kernel (`cluster_size > 1`),
    kernel, depthwise or pointwise (`hbnn_larq.quantizers.hyperbolic_kernels`).

    # Arguments
    probe_data: `(x, y)` (arrays or tensors) or a `tf.data.Dataset` of such batches, used by
        the `"loss"` criterion; the first `probe_batches` batches are kept fixed for the run.
    probe_batches: number of batches taken from a dataset `probe_data`.
    every: select every `every` epochs (int >= 1).
    warmup_epochs: epochs of random chart per batch before selection starts (int >= 0).
    seed: seed of the random warm-up charts.
    history_path: optional `.json` file rewritten after every selection round with `history`;
        a resumed run (same file) keeps the rounds of the epochs before the one it restarts at.
    verbose: print switches.

    # Attributes
    history: one dict per selection round: epoch, and per kernel (keyed by
        `QuantizedKernel.name`: the layer's name for a `kernel`, `<layer>/depthwise_kernel` or
        `<layer>/pointwise_kernel` otherwise) the chosen index, whether it switched, the candidate
        scores and the fraction of binary weights the switch flipped.
    """

    def __init__(self, probe_data=None, probe_batches: int = 1, every: int = 1, warmup_epochs: int = 0,
                 seed: int = 0, history_path=None, verbose: int = 0):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"`every` must be an int >= 1, got {every!r}.")
        if int(warmup_epochs) < 0:
            raise ValueError(f"`warmup_epochs` must be an int >= 0, got {warmup_epochs!r}.")
        if int(seed) < 0:
            raise ValueError(f"`seed` must be an int >= 0, got {seed!r}.")
        self.probe = self._fixed_probe(probe_data, probe_batches) if probe_data is not None else None
        self.every, self.warmup_epochs, self.verbose = int(every), int(warmup_epochs), verbose
        self.seed = int(seed)
        self.history_path = Path(history_path) if history_path is not None else None
        self._epoch = 0
        self.history: list[dict] = []
        if self.history_path is not None and self.history_path.is_file():
            self.history = json.loads(self.history_path.read_text())

    @staticmethod
    def _fixed_probe(data, batches):
        if isinstance(data, tf.data.Dataset):
            xs, ys = zip(*[(x, y) for x, y, *_ in data.take(batches)])
            return tf.concat(xs, 0), tf.concat(ys, 0)
        x, y = data
        return tf.convert_to_tensor(x), tf.convert_to_tensor(y)

    def _epc_kernels(self):
        return [k for k in hyperbolic_kernels(self.model)
                if k.quantizer.cluster_size > 1 and k.quantizer.selection != "never"]

    def on_train_begin(self, logs=None):
        if any(k.quantizer.selection == "loss" for k in self._epc_kernels()) and self.probe is None:
            raise ValueError("selection='loss' needs `probe_data` in ChartSelection(probe_data=(x, y)).")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if epoch >= self.warmup_epochs and (epoch - self.warmup_epochs) % self.every == 0:
            self.select(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch < self.warmup_epochs:
            # Drawn from (seed, epoch, batch), not a running generator: a resumed fit
            # (BackupAndRestore) then draws the same charts as an uninterrupted one.
            rng = np.random.default_rng([self.seed, self._epoch, batch])
            for k in self._epc_kernels():
                k.quantizer.active_index.assign(int(rng.integers(k.quantizer.cluster_size)))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for k in self._epc_kernels():
                logs[f"chart/{k.name}"] = float(k.quantizer.active_index.numpy())

    # -- the selection round ---------------------------------------------------------------
    def select(self, epoch: int = -1) -> dict:
        record = {"epoch": int(epoch), "layers": {}}
        for position, kernel in enumerate(self._epc_kernels()):
            q = kernel.quantizer
            before = kernel.quantized()
            scores = self._scores(kernel, epoch, position)
            choice = int(np.argmin(scores))
            switched = choice != int(q.active_index.numpy())
            q.set_active(choice, kernel.variable)
            if switched and q.on_switch == "reexpress":
                self._reset_optimizer_state(kernel.variable)
            flipped = float(np.mean(np.sign(kernel.quantized()) != np.sign(before))) if switched else 0.0
            record["layers"][kernel.name] = {"index": choice, "switched": switched,
                                             "scores": [float(s) for s in scores], "flipped": flipped}
            if self.verbose and switched:
                print(f"ChartSelection: {kernel.name} -> chart {choice} (flipped {flipped:.1%} of signs)")
        if epoch >= 0:  # a resumed run selects again at the epoch it restarts: replace that round
            self.history = [r for r in self.history if r["epoch"] < epoch]
        self.history.append(record)
        if self.history_path is not None:
            write_json(self.history_path, self.history)
        return record

    def _reset_optimizer_state(self, latent) -> None:
        """A re-expressed latent kernel starts with fresh optimizer slots (`optimizers.reset_slots`)."""
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            reset_slots(optimizer, latent)

    def _scores(self, kernel, epoch: int, position: int) -> np.ndarray:
        """Lower is better: the probe loss, random draws, or the quantizer's geometric score."""
        quantizer = kernel.quantizer
        if quantizer.selection == "loss":
            return self._loss_scores(quantizer)
        if quantizer.selection == "random":
            # From (seed, epoch, layer) like the warm-up charts: a resumed run draws the same.
            return np.random.default_rng([self.seed, max(epoch, 0), position]).random(quantizer.cluster_size)
        return quantizer.chart_scores(kernel.variable)

    def _loss_scores(self, quantizer) -> np.ndarray:
        saved = self._batchnorm_state()
        current = int(quantizer.active_index.numpy())
        scores = []
        for j in range(quantizer.cluster_size):
            quantizer.active_index.assign(j)
            scores.append(self._probe_loss())
        quantizer.active_index.assign(current)
        for variable, value in saved:
            variable.assign(value)
        return np.array(scores)

    def _probe_loss(self) -> float:
        # The compiled loss would also update the epoch's loss metric, and a reducing Loss object
        # refuses to run under a distribution strategy: use the unreduced per-sample loss.
        x, y = self.probe
        loss_fn = tf.keras.losses.get(self.model.loss)
        per_sample = loss_fn.call if isinstance(loss_fn, tf.keras.losses.Loss) else loss_fn
        return float(tf.reduce_mean(per_sample(y, self.model(x, training=True))))

    def _batchnorm_state(self):
        return [
            (v, v.numpy())
            for layer in self.model.submodules
            if isinstance(layer, tf.keras.layers.BatchNormalization)
            for v in layer.non_trainable_weights
        ]
