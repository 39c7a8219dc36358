import numpy as np

import hbnn_larq
from hbnn_larq.utils import quantized_kernel
from tests.helpers import SEPARABLE_TOY_KERNELS, compile_hbnn, random_data, separable_toy_model, tiny_model


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


class StopAfter(hbnn_larq.FlipRateMonitor.__base__):
    """Simulates a kill: raises at the end of epoch `epochs` (so no `on_train_end` runs)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt


def test_flips_total_counts_from_the_start_across_an_interrupted_fit(tmp_path):
    x, y = random_data(64)
    model = compile_hbnn(tiny_model("hyperbolic_sign", channels=(8, 8)), lr=0.5)
    snaps = Snapshots()
    state = tmp_path / "flips_initial.npz"
    try:
        model.fit(x, y, epochs=3, batch_size=16, verbose=0,
                  callbacks=[snaps, hbnn_larq.FlipRateMonitor(state_path=state), StopAfter(2)])
    except KeyboardInterrupt:
        pass
    assert state.exists()
    first = snaps.kernels[0]
    resumed = hbnn_larq.FlipRateMonitor(state_path=state)
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[snaps, resumed])
    for i, layer in enumerate(snaps._layers()):
        assert history.history[f"flips_total/{layer.name}"][0] == np.mean(snaps.kernels[-1][i] != first[i])
    assert history.history["flips_total/mean"][0] > history.history["flips/mean"][0]  # not counted from the resume
    assert not state.exists()


def test_depthwise_and_pointwise_kernels_are_watched():
    model = separable_toy_model()
    monitor = hbnn_larq.FlipRateMonitor()
    monitor.set_model(model)
    monitor.on_train_begin()
    model.get_layer("separable").pointwise_kernel.assign(-model.get_layer("separable").pointwise_kernel)
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert {key: value for key, value in logs.items() if key.startswith("flips/") and key != "flips/mean"} == {
        f"flips/{name}": 1.0 if name == "separable/pointwise_kernel" else 0.0 for name in SEPARABLE_TOY_KERNELS}
