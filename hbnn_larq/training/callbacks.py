"""The callbacks of a training run: resuming, flip rates, quantizer schedules, EPC's chart
selection, the per-epoch records (`epochs.json`, `history.csv`, TensorBoard) and the progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path

import tensorflow as tf

from hbnn_larq._atomic import write_json
from hbnn_larq.flips import CompactProgbarLogger, FlipRateMonitor
from hbnn_larq.schedules import QuantizerSchedule
from hbnn_larq.selection import ChartSelection
from hbnn_larq.training import recipes


class EpochRecorder(tf.keras.callbacks.Callback):
    """Keeps `epochs.json` in the run directory: one record per completed epoch (train accuracy
    and loss, the accuracy and loss of the split Keras validates on each epoch, mean flip rate,
    `lr`: the learning rate of the epoch's last step, `seconds`), surviving restarts.

    `monitored` names that split in the records: `"validation"` (`val_accuracy`, `val_loss`) when
    the run holds a validation split out of the training data, else `"test"` (`test_accuracy`,
    `test_loss`: the test split is then evaluated after every epoch, for curves, never to choose).

    `seconds` runs from the previous epoch's end (or the start of training) to this one's, so it
    includes every callback's work, whatever their order: EPC's chart selection, which runs in
    an earlier callback's `on_epoch_begin`, is part of what an epoch costs."""

    def __init__(self, path, monitored: str = "test"):
        super().__init__()
        self.path = Path(path)
        self.prefix = {"test": "test", "validation": "val"}[monitored]
        self.records = {r["epoch"]: r for r in json.loads(self.path.read_text())} if self.path.is_file() else {}

    def on_train_begin(self, logs=None):
        self._last = time.time()

    def on_epoch_end(self, epoch, logs=None):
        previous, now = self._last, time.time()
        self._last = now
        logs = logs or {}
        pick = lambda key: float(logs[key]) if key in logs else None  # noqa: E731
        # With a schedule, Keras' `learning_rate` is the value used by the last step.
        lr = self.model.optimizer.learning_rate
        self.records[epoch + 1] = {
            "epoch": epoch + 1,
            "train_accuracy": pick("accuracy"), "train_loss": pick("loss"),
            f"{self.prefix}_accuracy": pick("val_accuracy"), f"{self.prefix}_loss": pick("val_loss"),
            "flip_rate_mean": pick("flips/mean"), "lr": float(tf.keras.backend.get_value(lr)),
            "seconds": now - previous,
        }
        write_json(self.path, [self.records[k] for k in sorted(self.records)])


def run_callbacks(config, run_dir: Path, dataset, epochs: int, chief: bool) -> list:
    """The callbacks of the run of `TrainConfig` `config` in `run_dir` (records: chief only)."""
    callbacks = [
        tf.keras.callbacks.BackupAndRestore(str(run_dir / "backup"), delete_checkpoint=True),
        # After BackupAndRestore, which restores the weights first: flips count from the run's start.
        FlipRateMonitor(state_path=run_dir / "flips_initial.npz" if chief else None),
        QuantizerSchedule(total_epochs=epochs),  # IR-Net's t and ReCU's tau; a no-op otherwise
    ]
    if recipes.is_hyperbolic(config.quantizer) and config.cluster_size > 1:
        callbacks.append(ChartSelection(probe_data=dataset.probe_batch(), seed=config.seed, verbose=config.verbose,
                                        history_path=run_dir / "charts.json" if chief else None))
    if chief:
        callbacks += [
            EpochRecorder(run_dir / "epochs.json", "validation" if dataset.validation is not None else "test"),
            tf.keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
            tf.keras.callbacks.TensorBoard(str(run_dir / "logs"), profile_batch=0),
        ]
    # Keras' progress line with the mean flip rates only; the per-layer ones go to the records.
    return callbacks + [CompactProgbarLogger()]
