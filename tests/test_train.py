"""Tests of `hbnn_larq.training` and the `train.py` CLI on tiny generated image folders."""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from hbnn_larq import hyperbolize
from hbnn_larq.export import op_names
from hbnn_larq.quantizers import hyperbolic_quantizers
from hbnn_larq.training import ConfigError, TrainConfig, callbacks, optimizer, recipes, run
from hbnn_larq.training.config import changed_settings, default_run_dir, hashed_fields
from hbnn_larq.utils import binarized_layers

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from test_data import write_image_folder  # noqa: E402
from tests.helpers import separable_toy_model  # noqa: E402
import train as cli  # noqa: E402

TRAIN = str(REPO / "train.py")
# Eager mode: tracing the training step costs 30-60 s on a busy 2-core machine, more than these runs.
TINY = ["--model", "vggsmall", "--width", "0.125", "--batch-size", "8", "--seed", "1", "--run-eagerly"]


def run_cli(args, cwd, env_extra=None, timeout=240):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("HBNN_CACHE_DIR", str(tmp_path / "cache"))
    return write_image_folder(tmp_path / "tiny", train_per_class=16, test_per_class=8)


# -- the recipe, in-process ----------------------------------------------------------------------
def _toy_model():
    inputs = tf.keras.Input((4,))
    x = tf.keras.layers.Dense(6, name="fp")(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    x = lq.layers.QuantDense(3, kernel_quantizer="ste_sign", use_bias=True, name="binary")(x)
    return tf.keras.Model(inputs, x)


def test_weight_decay_on_kernels_only_and_latent_multiplier():
    model = _toy_model()
    decayed, latent = optimizer.decayed_variable_names(model), optimizer.latent_kernel_names(model)
    assert sorted(decayed) == ["binary/kernel:0", "fp/kernel:0"] and latent == ["binary/kernel:0"]
    opt = optimizer.KernelSGD(l2=0.1, decayed=decayed, scaled=latent, multiplier=3.0, learning_rate=0.5)
    before = {v.name: v.numpy() for v in model.trainable_variables}
    opt.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
    for v in model.trainable_variables:
        expected = before[v.name] * (1 - 0.5 * 0.1 * {"binary/kernel:0": 3.0, "fp/kernel:0": 1.0}.get(v.name, 0.0))
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, err_msg=v.name)


def test_depthwise_and_pointwise_latent_kernels_get_the_latent_multiplier_and_weight_decay():
    model = hyperbolize(separable_toy_model())
    latent = optimizer.latent_kernel_names(model)
    assert latent == ["conv/kernel:0", "depthwise/depthwise_kernel:0", "separable/depthwise_kernel:0",
                      "separable/pointwise_kernel:0"]
    assert sorted(optimizer.decayed_variable_names(model)) == sorted([*latent, "dense/kernel:0"])


@pytest.mark.parametrize("quantizer", recipes.recipe_names())
def test_points_step_defaults_to_the_recipes_and_reaches_the_optimizer(quantizer):
    model = _toy_model()
    default = TrainConfig(quantizer=quantizer)
    expected = recipes.point_lr_multiplier(quantizer)
    assert default.resolved_point_lr_multiplier() == expected
    assert (expected is None) == (not recipes.is_hyperbolic(quantizer))
    explicit = TrainConfig(quantizer=quantizer, point_lr_multiplier=7.0)
    for config, multiplier in ((default, expected), (explicit, 7.0)):
        made = optimizer.make_optimizer(config, model, 0.1, weight_decay=0.0)
        if recipes.is_hyperbolic(quantizer):
            assert made.point_lr_multiplier == multiplier
        else:
            assert isinstance(made, optimizer.KernelSGD)


@pytest.mark.parametrize("quantizer", recipes.recipe_names())
def test_latent_step_defaults_to_the_recipes_and_reaches_the_optimizer(quantizer):
    model = _toy_model()
    default = TrainConfig(quantizer=quantizer)
    assert default.resolved_latent_lr_multiplier() == recipes.latent_lr_multiplier(quantizer)
    explicit = TrainConfig(quantizer=quantizer, latent_lr_multiplier=7.0)
    for config, multiplier in ((default, recipes.latent_lr_multiplier(quantizer)), (explicit, 7.0)):
        made = optimizer.make_optimizer(config, model, 0.1, weight_decay=0.0)
        assert getattr(made, "inner_optimizer", made).multiplier == multiplier


def test_learning_rate_schedule():
    schedule = optimizer.learning_rate_schedule(0.1, epochs=10, steps_per_epoch=10, warmup_epochs=2)
    lrs = [float(schedule(step)) for step in (0, 10, 20, 60, 100)]
    assert lrs[0] == 0 and lrs[1] == pytest.approx(0.05) and lrs[2] == pytest.approx(0.1)
    assert lrs[2] > lrs[3] > lrs[4] and lrs[4] == pytest.approx(0, abs=1e-7)
    assert [optimizer.default_warmup_epochs(e) for e in (2, 19, 20, 60, 600)] == [0, 0, 1, 3, 5]
    no_warmup = optimizer.learning_rate_schedule(0.1, epochs=1, steps_per_epoch=10, warmup_epochs=0)
    assert float(no_warmup(0)) == pytest.approx(0.1)


@pytest.mark.parametrize("warmup_epochs", [0, 3])
def test_a_segments_schedule_is_the_single_runs_shifted_by_its_first_epoch(warmup_epochs):
    whole = optimizer.learning_rate_schedule(0.1, epochs=10, steps_per_epoch=7, warmup_epochs=warmup_epochs)
    for first_epoch in (1, 2, 6):
        offset = first_epoch * 7
        segment = optimizer.learning_rate_schedule(0.1, epochs=10, steps_per_epoch=7, warmup_epochs=warmup_epochs,
                                                   step_offset=offset)
        for step in (0, 1, 5, 13):  # step 0: the segment's first step takes the LR of global step `offset`
            assert float(segment(step)) == pytest.approx(float(whole(step + offset)), abs=1e-9)
        restored = tf.keras.optimizers.schedules.deserialize(tf.keras.optimizers.schedules.serialize(segment))
        assert float(restored(tf.constant(3, tf.int64))) == pytest.approx(float(whole(3 + offset)), abs=1e-9)
    assert optimizer.learning_rate_schedule(0.1, 10, 7, 0, step_offset=0).__class__.__name__ == "CosineDecay"


def test_config_errors_name_parameter_and_choices():
    with pytest.raises(ConfigError, match="`model` must be one of .*vggsmall"):
        TrainConfig(model="alexnet").validate()
    with pytest.raises(ConfigError, match="`quantizer` must be one of .*hbnn"):
        TrainConfig(quantizer="xnor").validate()
    with pytest.raises(ConfigError, match="`epochs` must be an integer >= 1"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ConfigError, match="`seed` must be an integer >= 0, got -1"):
        TrainConfig(seed=-1).validate()
    with pytest.raises(ConfigError, match="Unknown config key.*bogus"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(ConfigError, match="`precision` must be one of 'float32'"):
        TrainConfig(precision="float64").validate()


def test_segment_epoch_errors_name_the_parameter():
    for values, message in (
            (dict(epochs=4, first_epoch=-1), r"`first_epoch` must be an integer >= 0 and < `epochs` \(4\), got -1"),
            (dict(epochs=4, first_epoch=4), r"`first_epoch` .* got 4"),
            (dict(epochs=4, first_epoch=True), r"`first_epoch` .* got True"),
            (dict(first_epoch=-2), r"`first_epoch` must be an integer >= 0, got -2"),  # epochs not known yet
            (dict(epochs=4, first_epoch=2, stop_epoch=2), r"`stop_epoch` must be an integer > `first_epoch` \(2\) "
                                                          r"and <= `epochs` \(4\), got 2"),
            (dict(epochs=4, stop_epoch=5), r"`stop_epoch` .* got 5")):
        with pytest.raises(ConfigError, match=message):
            TrainConfig(**values).validate()
    assert TrainConfig(epochs=4, first_epoch=1, stop_epoch=3).validate().epoch_range(4) == (1, 3)
    assert TrainConfig(first_epoch=3).epoch_range(600) == (3, 600)
    with pytest.raises(ConfigError, match="`first_epoch` must be .* < `epochs` \\(600\\), got 600"):
        TrainConfig(first_epoch=600).epoch_range(600)  # train() checks again once `epochs` is resolved
    with pytest.raises(SystemExit):
        cli.parse_config(["--first-epoch", "-1"])
    config = cli.parse_config(["--epochs", "60", "--first-epoch", "20", "--stop-epoch", "40"]).validate()
    assert (config.epochs, config.first_epoch, config.stop_epoch) == (60, 20, 40)


@pytest.mark.parametrize("variant, stem", [(None, (3, 3)), ("cifar", (3, 3)), ("imagenet", (7, 7))])
def test_variant_picks_the_resnet_layout_at_any_image_size(variant, stem):
    config = TrainConfig(model="resnet18", width=0.125, variant=variant).validate()
    dataset = type("Dataset", (), {"input_shape": (64, 64, 3), "num_classes": 10, "mean": (0.5,) * 3, "std": (0.25,) * 3})()
    assert run.build_model(config, dataset).get_layer("stem_conv").kernel_size == stem


def test_variant_errors_and_run_dir():
    with pytest.raises(ConfigError, match="`variant` applies to resnet18, resnet34 only; `model` 'vggsmall'"):
        TrainConfig(variant="imagenet").validate()
    with pytest.raises(ConfigError, match="`variant` must be one of 'cifar', 'imagenet'; got 'mobile'"):
        TrainConfig(model="resnet18", variant="mobile").validate()
    plain, imagenet = TrainConfig(model="resnet18"), TrainConfig(model="resnet18", variant="imagenet")
    assert plain.default_run_dir() != imagenet.default_run_dir()


# A value for every field that differs from its default: each hashed one must move the run directory.
OTHER_VALUES = dict(
    model="resnet18", dataset="cifar100", data_dir="/data", quantizer="ste_sign", epochs=3, batch_size=128, lr=0.2,
    momentum=0.8, warmup_epochs=1, weight_decay=0.0, latent_lr_multiplier=3.0, point_lr_multiplier=3.0,
    point_update="mobius", radius=0.5, cluster_size=2, selection="loss", on_switch="keep", grouping="channel",
    width=0.5, variant="imagenet", image_size=64, seed=1, strategy="mirrored", precision="mixed_bfloat16",
    max_train_examples=100, max_test_examples=100, validation_split=0.1, init_weights="cifar10",
    first_epoch=1, stop_epoch=2,
    run_dir="elsewhere", export=False, download=False, overwrite=True, run_eagerly=True, verbose=0,
)
OUTPUT_ONLY = ("run_dir", "export", "download", "overwrite", "run_eagerly", "verbose")
EPC_ONLY = ("selection", "on_switch")  # EPC's options: they change nothing with one chart


def test_other_values_cover_every_field():
    assert set(OTHER_VALUES) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("field", sorted(OTHER_VALUES))
def test_run_dir_moves_with_every_field_that_changes_the_run(field):
    base = TrainConfig(cluster_size=2) if field in EPC_ONLY else TrainConfig()
    changed = dataclasses.replace(base, **{field: OTHER_VALUES[field]})
    assert default_run_dir(base) == default_run_dir(dataclasses.replace(base))  # same config, same directory
    if field in OUTPUT_ONLY:
        assert default_run_dir(changed) == default_run_dir(base), field
    else:
        assert default_run_dir(changed) != default_run_dir(base), field
    assert changed.default_run_dir() == default_run_dir(changed)


def test_a_whole_run_keeps_the_directory_it_had_before_segments_existed():
    assert "first_epoch" not in hashed_fields(TrainConfig()) and "stop_epoch" not in hashed_fields(TrainConfig())
    assert default_run_dir(TrainConfig(epochs=5, stop_epoch=5)) == default_run_dir(TrainConfig(epochs=5))


@pytest.mark.parametrize("field", EPC_ONLY)
def test_epc_options_do_not_move_a_one_chart_run(field):
    assert default_run_dir(TrainConfig(**{field: OTHER_VALUES[field]})) == default_run_dir(TrainConfig())


@pytest.mark.parametrize("quantizer", recipes.recipe_names())
def test_stating_the_recipes_defaults_keeps_the_run_dir(quantizer):
    leaves = TrainConfig(quantizer=quantizer)
    states = TrainConfig(quantizer=quantizer, radius=leaves.resolved_radius(),
                         latent_lr_multiplier=leaves.resolved_latent_lr_multiplier(),
                         point_lr_multiplier=leaves.resolved_point_lr_multiplier())
    assert default_run_dir(states) == default_run_dir(leaves)
    as_integers = TrainConfig(quantizer=quantizer, width=1, latent_lr_multiplier=int(states.latent_lr_multiplier))
    assert default_run_dir(as_integers) == default_run_dir(leaves)


@pytest.mark.parametrize("field, value", [("point_lr_multiplier", 30.0), ("radius", 0.01), ("cluster_size", 4),
                                          ("point_update", "mobius")])
def test_point_options_with_a_recipe_without_points_are_refused(field, value):
    with pytest.raises(ConfigError, match=rf"`{field}` applies to the HBNN recipes \('hbnn'.*only; `quantizer` "
                                          r"'ste_sign' has no points"):
        TrainConfig(quantizer="ste_sign", **{field: value}).validate()
    TrainConfig(quantizer="hbnn-boundary", **{field: value}).validate()


def test_on_switch_reaches_every_epc_quantizer():
    with pytest.raises(ConfigError, match="`on_switch` must be one of 'keep', 'reexpress'; got 'swap'"):
        TrainConfig(on_switch="swap").validate()
    config = cli.parse_config(["--cluster-size", "2", "--on-switch", "reexpress", "--width", "0.125"]).validate()
    shape = types.SimpleNamespace(input_shape=(32, 32, 3), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    quantizers = [q for _, q in hyperbolic_quantizers(run.build_model(config, shape))]
    assert quantizers and all(q.on_switch == "reexpress" and q.cluster_size == 2 for q in quantizers)


def test_the_boundary_recipe_builds_boundary_quantizers_and_options_override_its_radius():
    quantizer = recipes.kernel_quantizer("hbnn-boundary")
    assert quantizer.boundary and TrainConfig(quantizer="hbnn-boundary").resolved_radius() == quantizer.r
    assert recipes.kernel_quantizer("hbnn-boundary", r=1.0).r == 1.0  # the paper's ∂D, on request


@pytest.mark.slow
def test_bad_flags_list_valid_choices(tmp_path):
    result = run_cli(["--quantizer", "xnor"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "--quantizer: invalid choice: 'xnor'" in result.stderr and "hbnn" in result.stderr
    assert "Traceback" not in result.stderr
    for flags, message in ((["--model", "lenet"], "invalid choice: 'lenet'"),
                           (["--selection", "best"], "'loss'"), (["--epochs", "0"], "must be an integer >= 1"),
                           (["--variant", "mobile"], "invalid choice: 'mobile'")):
        with pytest.raises(SystemExit):
            cli.parse_config(flags)
    config_file = tmp_path / "run.json"
    config_file.write_text(json.dumps({"epochs": 3, "lr": 0.05, "cluster_size": 4}))
    config = cli.parse_config(["--config", str(config_file), "--lr", "0.2"])
    assert (config.epochs, config.lr, config.cluster_size, config.model) == (3, 0.2, 4, "vggsmall")
    config_file.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(SystemExit):
        cli.parse_config(["--config", str(config_file)])
    missing = tmp_path / "nowhere"
    assert cli.main(["--dataset", str(missing), "--no-download", "--run-dir", str(tmp_path / "run")]) == 2


def help_entries(parser) -> dict:
    """`--option` -> its whole `--help` entry on one line (an entry may wrap onto indented lines)."""
    entries, current = {}, None
    for line in parser.format_help().split("options:", 1)[1].splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
    return {option: " ".join(text.split()) for option, text in entries.items()}


def test_help_states_only_true_defaults(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    parser = cli.build_parser()
    entries = help_entries(parser)
    for flag in ("--no-export", "--no-download", "--overwrite", "--run-eagerly"):
        assert "(default:" not in entries[flag], entries[flag]
    assert all("(default: None)" not in entry for entry in entries.values())
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0:
            continue
        entry = entries[action.option_strings[0]]
        if action.default is None:  # decided later: the help says how
            assert "default" in entry, entry
        else:
            assert f"(default: {action.default})" in entry, entry
    assert "(default: 256)" in entries["--batch-size"] and "600 for 32-px data" in entries["--epochs"]


def test_progress_line_shows_mean_flip_rates_and_the_records_every_layer(tmp_path, capsys):
    from tests.helpers import random_data, tiny_model

    model = tiny_model("ste_sign", channels=(8, 8))
    model.compile(tf.keras.optimizers.SGD(0.5), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    config = types.SimpleNamespace(quantizer="ste_sign", cluster_size=1, seed=0, verbose=2)
    x, y = random_data(32)
    model.fit(x, y, batch_size=16, epochs=1, verbose=2, validation_data=(x, y),
              callbacks=callbacks.run_callbacks(config, tmp_path, types.SimpleNamespace(validation=None), 1, True))
    layer_keys = [f"{key}/{layer.name}" for layer in binarized_layers(model) for key in ("flips", "flips_total")]
    progress = capsys.readouterr().out
    assert "flips/mean" in progress and "val_accuracy" in progress
    assert not any(key in progress for key in layer_keys), progress
    header = (tmp_path / "history.csv").read_text().splitlines()[0].split(",")
    assert set(layer_keys) | {"flips/mean", "flips_total/mean"} <= set(header)
    tags = {value.tag for path in (tmp_path / "logs" / "train").glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(path)) for value in event.summary.value}
    assert {f"epoch_{key}" for key in layer_keys} <= tags


# -- the CLI, end to end ---------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_then_same_command_resumes_and_completes(tiny, tmp_path, monkeypatch):
    """End to end: a run (EPC, t=2) is SIGKILLed after its first epoch, the same command resumes
    it, and the finished run directory holds every output."""
    epochs, steps = 4, 6
    # The papers' latent step: on 48 images x 4 epochs the recipe's x10 (measured best on real
    # CIFAR-10 runs) overshoots and the run ends at chance, which would hide a broken resume.
    args = [*TINY, "--dataset", str(tiny), "--epochs", str(epochs), "--lr", "0.02", "--cluster-size", "2",
            "--latent-lr-multiplier", "1", "--verbose", "2"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HBNN_CACHE_DIR": str(tmp_path / "cache")}
    process = subprocess.Popen([sys.executable, TRAIN, *args, "--no-export"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, records = time.time() + 200, []
    while time.time() < deadline and process.poll() is None and not records:
        found = list(tmp_path.glob("runs/*/epochs.json"))
        records = json.loads(found[0].read_text()) if found else []
        time.sleep(0.05)
    time.sleep(0.5)  # into the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    (run_dir,) = tmp_path.glob("runs/*")
    completed = len(json.loads((run_dir / "epochs.json").read_text()))
    assert 1 <= completed < epochs and not (run_dir / "results.json").exists(), "killed mid-training"
    assert (run_dir / "flips_initial.npz").is_file()  # flips_total keeps counting from epoch 0

    resumed = run_cli(args, cwd=tmp_path, env_extra={"HBNN_CACHE_DIR": str(tmp_path / "cache")})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 1/" not in resumed.stdout and f"Epoch {epochs}/{epochs}" in resumed.stdout
    assert f"Epoch {completed + 1}/{epochs}" in resumed.stdout or f"Epoch {completed}/{epochs}" in resumed.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert [r["epoch"] for r in results["epochs"]] == list(range(1, epochs + 1))
    # The step counter (hence the LR schedule) was restored, not restarted with the process.
    schedule = optimizer.learning_rate_schedule(0.02, epochs, steps, 0)
    assert results["epochs"][-1]["lr"] == pytest.approx(float(schedule(epochs * steps - 1)), rel=1e-4)

    assert results["status"] == "complete" and results["config"]["cluster_size"] == 2
    assert not (run_dir / "flips_initial.npz").exists()
    for record in results["epochs"]:
        assert 0 <= record["train_accuracy"] <= 1 and 0 <= record["test_accuracy"] <= 1
        # (the 24 test images are separable: the loss can round to exactly 0 in float32)
        assert 0 <= record["flip_rate_mean"] <= 1 and 0 <= record["test_loss"] < float("inf")
    assert results["final"]["test_accuracy"] > 0.5, results["epochs"]  # chance is 1/3
    assert results["resolved"] == {"epochs": epochs, "weight_decay": 5e-4, "warmup_epochs": 0, "steps_per_epoch": steps,
                                   "point_lr_multiplier": recipes.point_lr_multiplier("hbnn"),
                                   "latent_lr_multiplier": 1.0}
    assert results["versions"]["larq"] == lq.__version__ and results["machine"]["cores"] >= 1
    assert (run_dir / "model.tflite").stat().st_size > 0 and (run_dir / "weights.npz").is_file()
    assert "chart/" in (run_dir / "history.csv").read_text()
    assert [r["epoch"] for r in json.loads((run_dir / "charts.json").read_text())] == list(range(epochs))
    assert list((run_dir / "logs").rglob("events.out.tfevents*"))
    assert "final test accuracy" in resumed.stdout
    model = tf.keras.models.load_model(run_dir / "model.keras")
    assert model.output_shape == (None, 3)
    # Re-running a complete run reports it instead of training again.
    config = TrainConfig(**{**results["config"], "verbose": 0})
    monkeypatch.chdir(tmp_path)
    assert run.train(config)["wall_time_s"] == results["wall_time_s"]


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tiny, tmp_path):
    script = f"""
import hbnn_larq, json, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from hbnn_larq.training import TrainConfig, train
results = train(TrainConfig(model="vggsmall", width=0.125, dataset={str(tiny)!r}, epochs=1, batch_size=8,
                            run_dir={str(tmp_path / 'run')!r}, strategy="mirrored", export=False, verbose=0,
                            run_eagerly=True))
print("RESULT", json.dumps({{"replicas": results["replicas"], "epochs": len(results["epochs"])}}))
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "HBNN_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT"))
    assert json.loads(line.split(" ", 1)[1]) == {"replicas": 2, "epochs": 1}


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multiworker_strategy_with_two_local_workers(tiny, tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    args = [*TINY, "--dataset", str(tiny), "--epochs", "1", "--no-export", "--verbose", "0",
            "--strategy", "multiworker", "--run-dir", str(tmp_path / "run")]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": tf_config,
               "HBNN_CACHE_DIR": str(tmp_path / "cache")}
        processes.append(subprocess.Popen([sys.executable, TRAIN, *args], cwd=tmp_path, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=240) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["replicas"] == 2 and len(results["epochs"]) == 1


def test_epoch_seconds_include_work_done_in_earlier_callbacks(tmp_path):
    # EPC's chart selection runs in a callback listed before the recorder (its on_epoch_begin);
    # an epoch's recorded time must include it, or `train_time_s` under-reports EPC's cost.
    pause = 0.5
    slow = tf.keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: time.sleep(pause))
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.zeros((8, 2), "float32")
    model.fit(x, x[:, :1], epochs=3, verbose=0,
              callbacks=[slow, callbacks.EpochRecorder(tmp_path / "epochs.json")])
    records = json.loads((tmp_path / "epochs.json").read_text())
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert all(r["seconds"] >= pause for r in records), records


@pytest.mark.slow
def test_traced_training_exports_one_bconv_per_binarized_conv(tiny, tmp_path):
    """In-process and traced (not `run_eagerly`), as real runs train: one epoch, then the export."""
    run_dir = tmp_path / "run"
    results = run.train(TrainConfig(model="vggsmall", width=0.125, dataset=str(tiny), epochs=1, batch_size=8, seed=1,
                                    run_dir=str(run_dir), verbose=0))
    assert results["status"] == "complete" and json.loads((run_dir / "results.json").read_text()) == results
    assert len(results["epochs"]) == 1 and 0 <= results["final"]["test_accuracy"] <= 1
    flatbuffer = (run_dir / "model.tflite").read_bytes()
    model = tf.keras.models.load_model(run_dir / "model.keras")
    binarized = binarized_layers(model)
    assert binarized and op_names(flatbuffer).count("LceBconv2d") == len(binarized)
    # The .tflite was checked in the LCE interpreter on the test images, fed as Keras is fed.
    deployment = results["deployment"]
    assert deployment["lce_bconv2d_ops"] == len(binarized) and deployment["examples"] == results["dataset"]["num_test"]
    assert deployment["keras_accuracy"] == pytest.approx(results["final"]["test_accuracy"], abs=1e-6)
    assert 0.5 <= deployment["agreement"] <= 1


@pytest.mark.parametrize("offline", [True, False])
def test_demo_configuration(offline, tmp_path, monkeypatch, capsys):
    """`python train.py` with no arguments: the default (HBNN) recipe on a CIFAR-10 subset sized to
    learn visibly in minutes on 2 cores, with a warm-up, exported and checked in LCE; without the
    offline CIFAR-10 copy, the synthetic task, said out loud."""
    if offline:
        write_image_folder(tmp_path / "data" / "cifar10-jpeg")
    monkeypatch.setenv("HBNN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HBNN_CACHE_DIR", str(tmp_path / "cache"))
    config = cli.parse_config([]).validate()
    out = capsys.readouterr().out
    assert config.dataset == ("cifar10" if offline else "synthetic") and ("SYNTHETIC" in out) != offline
    assert config.quantizer == TrainConfig().quantizer == "hbnn" and "Demo: HBNN" in out
    assert (config.model, config.width, config.epochs, config.warmup_epochs, config.batch_size) == ("vggsmall", 0.25, 5, 1, 128)
    assert (config.max_train_examples, config.max_test_examples, config.precision) == (20_000, 2_000, "float32")
    assert config.export and config.validation_split is None  # the curve shown is the test split's


@pytest.mark.parametrize("quantizer", ["hbnn", "ste_sign"])
def test_warm_start_predicts_what_the_stored_weights_do_with_initial_latent_sizes(quantizer, tmp_path):
    from hbnn_larq import zoo
    from hbnn_larq.training.warm_start import warm_start

    def build():
        return zoo.VGGSmall(width=0.125, input_normalization="cifar10", kernel_quantizer=recipes.kernel_quantizer(quantizer),
                            kernel_constraint=recipes.kernel_constraint(quantizer))

    trained = build()
    rng = np.random.default_rng(0)
    for layer in trained.layers:  # a "trained" state: other kernels, BN statistics, moved points
        for w in layer.weights:
            w.assign(rng.normal(1.0 if "variance" in w.name else 0.0, 0.3, w.shape).astype("float32") ** (2 if "variance" in w.name else 1))
    path = zoo.save_pretrained(trained, tmp_path / "weights.npz")
    fresh = build()
    initial = {layer.name: float(np.sqrt(np.mean(layer.kernel.numpy() ** 2))) for layer in binarized_layers(fresh)}
    scales = warm_start(fresh, path)
    assert scales == pytest.approx(initial)
    x = rng.integers(0, 256, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(fresh(x, training=False).numpy(), trained(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
    for layer in binarized_layers(fresh):
        assert np.sqrt(np.mean(layer.kernel.numpy() ** 2)) == pytest.approx(initial[layer.name], rel=1e-5)
    assert len(hyperbolic_quantizers(fresh)) == (5 if quantizer == "hbnn" else 0)
    for _, hq in hyperbolic_quantizers(fresh):
        assert all(not np.any(p.numpy()) for p in hq.points)


def test_bad_init_weights_names_the_parameter(tmp_path):
    with pytest.raises(ConfigError, match="`init_weights`"):
        run.train(TrainConfig(dataset="synthetic", width=0.125, epochs=1, batch_size=50, init_weights="nonexistent",
                              run_dir=str(tmp_path / "r"), verbose=0))


# -- segments: one long schedule run in pieces (issue 28) -------------------------------------------
def _segment(tmp_path, name, **values):
    return TrainConfig(dataset="synthetic", width=0.125, batch_size=8, max_train_examples=24, max_test_examples=16,
                       epochs=4, seed=1, lr=0.05, run_eagerly=True, export=False, verbose=0,
                       run_dir=str(tmp_path / name), **values)


class _Interrupt(Exception):
    pass


class _InterruptAtEpochEnd(tf.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise _Interrupt(epoch)


def test_a_segment_continues_the_schedule_and_numbering_and_resumes_in_its_run_dir(tmp_path, monkeypatch):
    """Epochs 1-1 of a 4-epoch run, then epochs 2-3 warm-started from its weights.npz: the second
    is interrupted after epoch 2 and the same call resumes it at epoch 3 (BackupAndRestore)."""
    monkeypatch.setenv("HBNN_CACHE_DIR", str(tmp_path / "cache"))
    first = run.train(_segment(tmp_path, "seg0", stop_epoch=1))
    assert [r["epoch"] for r in first["epochs"]] == [1]
    steps = first["resolved"]["steps_per_epoch"]
    whole = optimizer.learning_rate_schedule(0.05, 4, steps, 0)
    assert first["epochs"][0]["lr"] == pytest.approx(float(whole(steps - 1)), rel=1e-5)

    def interrupted(*args, **kwargs):  # stop after the segment's first epoch, once its checkpoint is saved
        return original(*args, **kwargs) + [_InterruptAtEpochEnd()]

    original = run.run_callbacks
    monkeypatch.setattr(run, "run_callbacks", interrupted)
    loaded = []  # the segment's data order is its own (`data.order_seed`), not the first segment's
    load_dataset = run.load_dataset
    monkeypatch.setattr(run, "load_dataset", lambda *a, **kw: loaded.append(kw) or load_dataset(*a, **kw))
    config = _segment(tmp_path, "seg1", first_epoch=1, stop_epoch=3, init_weights=first["artifacts"]["weights"])
    with pytest.raises(_Interrupt):
        run.train(config)
    assert loaded[0]["first_epoch"] == 1
    assert [r["epoch"] for r in json.loads((tmp_path / "seg1" / "epochs.json").read_text())] == [2]
    begun = []

    def watched(*args, **kwargs):
        return original(*args, **kwargs) + [tf.keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: begun.append(epoch))]

    monkeypatch.setattr(run, "run_callbacks", watched)
    second = run.train(config)
    assert begun == [2]  # resumed after epoch 2 (0-based 1), not restarted at the segment's start
    assert [r["epoch"] for r in second["epochs"]] == [2, 3]
    for record in second["epochs"]:  # the single 4-epoch run's learning rate at each epoch's last step
        assert record["lr"] == pytest.approx(float(whole(record["epoch"] * steps - 1)), rel=1e-5), record
    assert second["train_time_s"] == pytest.approx(sum(r["seconds"] for r in second["epochs"]))
    assert not list((tmp_path / "seg1" / "backup").glob("*")) and (tmp_path / "seg1" / "weights.npz").is_file()


def test_a_run_dir_holding_other_settings_is_refused_or_restarted_from_scratch(tmp_path, monkeypatch):
    """Resuming (or reporting) a run directory whose `config.json` names other settings would pair
    this command with another run's checkpoint or results: refused, naming the settings; with
    `overwrite`, trained from scratch there. Where the data lives and the segment's epochs may change."""
    config = _segment(tmp_path, "run")
    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": dataclasses.replace(config, lr=0.1, seed=2).to_dict()}))
    with pytest.raises(ConfigError, match=r"holds a run with other settings \(lr: 0\.1 -> 0\.05; seed: 2 -> 1\)"):
        run.train(config)
    assert changed_settings(dataclasses.replace(config, data_dir="elsewhere", stop_epoch=2), config.to_dict()) == []
    assert changed_settings(config, {**config.to_dict(), "a_future_field": 1}) == []
    # resolved values compare: an explicit default is the same run, another recipe is not
    assert changed_settings(dataclasses.replace(config, latent_lr_multiplier=10.0), config.to_dict()) == []
    assert "quantizer: 'hbnn' -> 'ste_sign'" in changed_settings(dataclasses.replace(config, quantizer="ste_sign"),
                                                               config.to_dict())

    class Loaded(Exception):
        pass

    monkeypatch.setattr(run, "load_dataset", lambda *a, **kw: (_ for _ in ()).throw(Loaded()))
    with pytest.raises(Loaded):  # --overwrite: past the check, with no checkpoint left to resume
        run.train(dataclasses.replace(config, overwrite=True))
    assert not (run_dir / "backup").exists()
