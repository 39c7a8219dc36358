import numpy as np

import hbnn_larq
from hbnn_larq.export import quantized_kernel
from tests.helpers import compile_hbnn, random_data, tiny_model


class Snapshots(hbnn_larq.FlipRateMonitor.__base__):
    """Independent record of the binary kernels at every epoch end."""

    def on_train_begin(self, logs=None):
        self.kernels = [[quantized_kernel(layer) for layer in self._layers()]]

    def _layers(self):
        return [layer for layer in self.model.layers if getattr(layer, "kernel_quantizer", None) is not None]

    def on_epoch_end(self, epoch, logs=None):
        self.kernels.append([quantized_kernel(layer) for layer in self._layers()])


def test_flip_rates_match_kernel_snapshots():
    for quantizer in ("hyperbolic_sign", "ste_sign"):
        x, y = random_data(64)
        model = compile_hbnn(tiny_model(quantizer, channels=(8, 8)), lr=0.5)
        monitor, snaps = hbnn_larq.FlipRateMonitor(), Snapshots()
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[snaps, monitor])
        names = [layer.name for layer in snaps._layers()]
        for epoch in range(3):
            for i, name in enumerate(names):
                now, before, first = snaps.kernels[epoch + 1][i], snaps.kernels[epoch][i], snaps.kernels[0][i]
                assert history.history[f"flips/{name}"][epoch] == np.mean(now != before)
                assert history.history[f"flips_total/{name}"][epoch] == np.mean(now != first)
        assert max(history.history["flips_total/mean"]) > 0
        assert monitor.history["flips/mean"] == history.history["flips/mean"]
