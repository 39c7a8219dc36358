"""The benchmark scripts' train.py commands are valid configurations that mean what their rows say."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import randomize_batch_norm, tiny_model

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
import accuracy  # noqa: E402
import deploy  # noqa: E402
import image_bits  # noqa: E402
import paired_images  # noqa: E402
import train  # noqa: E402
import zoo_weights  # noqa: E402


def _config(cmd):
    assert cmd[1].endswith("train.py")
    return train.parse_config(cmd[2:]).validate()


@pytest.mark.parametrize("protocol", sorted(accuracy.PROTOCOLS))
def test_every_row_is_a_valid_config_with_the_latent_step_it_names(protocol):
    for row, (_, flags) in accuracy.rows_for(protocol).items():
        config = _config(accuracy.command(protocol, row, seed=1))
        assert config.seed == 1 and config.run_dir.endswith(f"{protocol}/{row}-s1")
        # rows that name no latent step measure the papers' x1, whatever the recipes' default
        named = accuracy.flag_value(flags, "--latent-lr-multiplier", default="1")
        assert config.resolved_latent_lr_multiplier() == float(named), row
        assert (f"-wlr{named}" in row) == (named != "1"), row


# -- zoo weights, trained in segments (benchmarks/zoo_weights.py) ----------------------------------
@pytest.mark.parametrize("key", sorted(zoo_weights.PLANS))
def test_every_segment_of_every_plan_is_a_valid_config_continuing_the_one_before(key):
    plan = zoo_weights.PLANS[key]
    stops = [0]
    for k in range(plan.segments):
        config = _config(zoo_weights.command(plan, k))
        assert (config.model, config.dataset, config.width, config.variant) == (plan.model, "cifar10", 1.0, None)
        assert (config.epochs, config.precision, config.seed) == (plan.epochs, plan.precision, 0)
        assert config.first_epoch == k * plan.segment == stops[-1]  # starts where the previous one stopped
        assert config.init_weights == (None if k == 0 else str(zoo_weights.segment_file(plan, k - 1, ".npz")))
        assert config.run_dir == str(zoo_weights.RUNS / f"{key}-seg{k}")
        assert config.export == (k == plan.segments - 1)  # the final weights are converted and checked in LCE
        stops.append(config.epoch_range(config.epochs)[1])
    assert stops[-1] == plan.epochs and len(set(stops)) == len(stops)
    config = _config(zoo_weights.command(plan, 0))
    assert config.resolved_latent_lr_multiplier() == 10
    if plan.name == "hbnn":
        assert (config.quantizer, config.radius, config.resolved_point_lr_multiplier()) == ("hbnn-boundary", 0.01, 30)


def test_zoo_recipes_are_the_rows_chosen_on_cifar10_validation():
    """Issue 28 trains with issue 27's choices: the HBNN row (ball or ∂D) and the sign/STE row
    with the best validation accuracy in the committed quick-val selection."""
    store = accuracy.load("quick-val")
    chosen = selection.chosen_rows(store)
    validation = {line["row"]: line["val_accuracy"] for line in selection.selection_table(store)}
    best_hbnn = max((chosen[c] for c in ("hbnn", "bd")), key=validation.get)
    assert (zoo_weights.HBNN_ROW, zoo_weights.STE_ROW) == (best_hbnn, chosen["ste"])
    assert zoo_weights.HBNN == tuple(accuracy.SELECT_ROWS[best_hbnn][1])


def test_every_model_has_a_shipping_plan_and_vggsmall_a_sign_ste_twin_at_the_same_budget():
    shipping = {plan.model for plan in zoo_weights.PLANS.values() if plan.ship}
    assert shipping == {"vggsmall", "resnet18", "resnet34"}
    hbnn, ste = zoo_weights.PLANS["vggsmall-hbnn"], zoo_weights.PLANS["vggsmall-ste"]
    assert not ste.ship and (ste.epochs, ste.segment, ste.precision) == (hbnn.epochs, hbnn.segment, hbnn.precision)
    assert _config(zoo_weights.command(ste, 0)).quantizer == "ste_sign"


@pytest.fixture
def zoo_folders(tmp_path, monkeypatch):
    for name, folder in (("SEGMENTS", "segments"), ("RUNS", "runs"), ("WEIGHTS_DIR", "weights")):
        monkeypatch.setattr(zoo_weights, name, tmp_path / folder)
    monkeypatch.setattr(zoo_weights, "RESULTS", tmp_path / "zoo-weights.json")
    return tmp_path


def _fake_run_train(calls):
    """run_train without training: a complete results.json and a weights file for the command's config."""
    def run_train(cmd, run_dir, log_path):
        config = _config(cmd)
        calls.append(config)
        first, stop = config.epoch_range(config.epochs)
        results = {"config": config.to_dict(), "final": {"test_accuracy": stop / 100}, "train_time_s": 3600.0 * (stop - first),
                   "epochs": [{"epoch": e, "train_accuracy": 0.5, "test_accuracy": e / 100, "lr": 0.1, "seconds": 3600.0}
                              for e in range(first + 1, stop + 1)],
                   "machine": {"cpu_model": "Xeon", "cores": 2}, "versions": {}}
        Path(config.run_dir).mkdir(parents=True)
        (Path(config.run_dir) / "weights.npz").write_bytes(f"weights of epoch {stop}".encode())
        return 0, results
    return run_train


def test_the_next_segment_is_read_from_the_committed_folder(zoo_folders, monkeypatch):
    plan = zoo_weights.Plan("vggsmall", "t", epochs=5, segment=2, recipe=zoo_weights.HBNN, label="test")
    calls, finished = [], []
    monkeypatch.setattr(zoo_weights, "run_train", _fake_run_train(calls))
    monkeypatch.setattr(zoo_weights, "finish", lambda plan, store: finished.append(plan.key))
    assert zoo_weights.done_segments(plan) == 0
    assert zoo_weights.advance(plan, 1, {})
    assert zoo_weights.done_segments(plan) == 1 and not finished
    record = json.loads(zoo_weights.segment_file(plan, 0, ".json").read_text())
    assert record["command"] == zoo_weights.printable_command(zoo_weights.command(plan, 0))
    assert (record["first_epoch"], record["stop_epoch"], record["test_accuracy"]) == (0, 2, 0.02)
    assert [e["epoch"] for e in record["per_epoch"]] == [1, 2] and record["machine"]["cpu_model"] == "Xeon"
    # A new machine: no run directories, only the committed folder; the next segments start from it.
    shutil.rmtree(zoo_folders / "runs")
    assert zoo_weights.advance(plan, 5, {})
    assert [(c.first_epoch, c.stop_epoch) for c in calls] == [(0, 2), (2, 4), (4, 5)]
    assert calls[2].init_weights == str(zoo_weights.segment_file(plan, 1, ".npz")) and finished == ["vggsmall-t"]
    assert zoo_weights.segment_file(plan, 2, ".npz").read_bytes() == b"weights of epoch 5"
    # Weights without their record (a sitting ended between the two copies) are not a done segment.
    zoo_weights.segment_file(plan, 2, ".json").unlink()
    assert zoo_weights.done_segments(plan) == 2
    # Segments committed by other numbers than the plan's are refused, not continued.
    changed = dataclasses.replace(plan, epochs=6)
    with pytest.raises(SystemExit, match="The plan changed"):
        zoo_weights.done_segments(changed)


def test_an_unfinished_segment_is_not_committed(zoo_folders, monkeypatch, capsys):
    plan = zoo_weights.Plan("vggsmall", "t", epochs=4, segment=2, recipe=zoo_weights.HBNN, label="test")
    monkeypatch.setattr(zoo_weights, "run_train", lambda cmd, run_dir, log: (137, None))
    assert not zoo_weights.advance(plan, 1, {})
    assert zoo_weights.done_segments(plan) == 0 and "on this machine it resumes" in capsys.readouterr().out


def _commit_plan(plan, accuracy=0.8):
    """Committed records of every segment of `plan`, and real (tiny) weights for its last one."""
    from hbnn_larq import zoo

    zoo_weights.SEGMENTS.mkdir(parents=True)
    for k in range(plan.segments):
        first, stop = plan.bounds(k)
        record = {"command": zoo_weights.printable_command(zoo_weights.command(plan, k)), "first_epoch": first,
                  "stop_epoch": stop, "test_accuracy": accuracy, "train_time_s": 1800.0 * (stop - first),
                  "per_epoch": [{"epoch": e, "test_accuracy": accuracy} for e in range(first + 1, stop + 1)],
                  "machine": {"cpu_model": f"cpu{k % 2}", "cores": 2}, "versions": {"k": k}}
        zoo_weights.segment_file(plan, k, ".json").write_text(json.dumps(record))
        zoo_weights.segment_file(plan, k, ".npz").write_bytes(b"")
    model = zoo.VGGSmall(width=0.125, input_shape=(32, 32, 3), num_classes=10)
    zoo.save_pretrained(model, zoo_weights.segment_file(plan, plan.segments - 1, ".npz"))


def test_a_completed_plan_is_published_only_if_it_beats_the_shipped_weights(zoo_folders, monkeypatch, capsys):
    from hbnn_larq import zoo

    plan = zoo_weights.Plan("vggsmall", "t", epochs=3, segment=2, recipe=zoo_weights.HBNN, label="test")
    _commit_plan(plan)
    zoo.register_weights("cifar10", zoo_weights.segment_file(plan, 1, ".npz"), weights_dir=zoo_weights.WEIGHTS_DIR,
                         provenance={"test_accuracy": 0.80})
    registry = zoo_weights.WEIGHTS_DIR / "registry.json"
    before = registry.read_text()
    monkeypatch.setattr(zoo_weights, "accuracy", lambda model, weights, **kwargs: 0.79 if kwargs else 0.78)
    store = {}
    summary = zoo_weights.finish(plan, store)
    assert not summary["published"] and summary["shipped_accuracy_before"] == 0.80 and store == {}
    assert registry.read_text() == before and "the shipped file stays" in capsys.readouterr().out
    assert json.loads(zoo_weights.summary_file(plan).read_text()) == summary
    assert zoo_weights.advance(plan, 1, store) and store == {}  # complete and measured: nothing more to do

    monkeypatch.setattr(zoo_weights, "accuracy", lambda model, weights, **kwargs: 0.84 if kwargs else 0.85)
    summary = zoo_weights.finish(plan, store)
    assert summary["published"] and "published as vggsmall weights='cifar10'" in capsys.readouterr().out
    entry = json.loads(registry.read_text())["vggsmall"]["cifar10"]
    provenance = entry["provenance"]
    assert (provenance["test_accuracy"], provenance["slice"]["accuracy"], provenance["epochs"]) == (0.85, 0.84, 3)
    assert provenance["commands"] == [zoo_weights.printable_command(zoo_weights.command(plan, k)) for k in (0, 1)]
    assert [s["epochs"] for s in provenance["segments"]] == ["1-2", "3-3"]
    assert provenance["train_time_h"] == 1.5 and provenance["core_hours"] == 3.0
    assert provenance["machines"] == ["cpu0 (2 cores)", "cpu1 (2 cores)"] and len(provenance["test_accuracy_per_epoch"]) == 3
    assert store["vggsmall"]["provenance"] == provenance and json.loads(zoo_weights.RESULTS.read_text()) == store
    assert "3 epochs in 2 segments" in entry["description"]

    baseline = dataclasses.replace(plan, name="b", ship=False)
    for k in (0, 1):  # the same segments, filed under the baseline plan
        for suffix in (".json", ".npz"):
            target = zoo_weights.segment_file(baseline, k, suffix)
            shutil.copyfile(zoo_weights.segment_file(plan, k, suffix), target)
        record = json.loads(zoo_weights.segment_file(baseline, k, ".json").read_text())
        record["command"] = zoo_weights.printable_command(zoo_weights.command(baseline, k))
        zoo_weights.segment_file(baseline, k, ".json").write_text(json.dumps(record))
    monkeypatch.setattr(zoo_weights, "accuracy", lambda model, weights, **kwargs: 0.99)
    assert not zoo_weights.finish(baseline, store)["published"]  # a baseline plan never ships
    assert json.loads(registry.read_text())["vggsmall"]["cifar10"] == entry


def _entry(row, seed, accuracy, **times):
    return {"row": row, "seed": seed, "final_test_accuracy": accuracy, "best_test_accuracy": accuracy,
            "best_epoch": 10, "flips": {}, "wall_time_s": None, **times}


def test_table_pairs_by_seed_against_the_best_sign_ste_row_and_times_rows_by_their_fastest_seed():
    store = {"protocol": "quick", "runs": {
        "ste-wlr3-s0": _entry("ste-wlr3", 0, 0.60, wall_time_s=600.0),
        "ste-wlr10-s0": _entry("ste-wlr10", 0, 0.70, wall_time_s=600.0),
        "ste-wlr10-s1": _entry("ste-wlr10", 1, 0.72, wall_time_s=900.0),  # a slower VM: not the row's cost
        # resumed once: the last process ran 300 s of the run's 1200 s of epochs
        "hbnn-m100-s1": _entry("hbnn-m100", 1, 0.71, wall_time_s=300.0, train_time_s=1200.0),
    }}
    lines = {line["row"]: line for line in accuracy.table(store)}
    assert lines["hbnn-m100"]["reference"] == "ste-wlr10"
    assert lines["hbnn-m100"]["vs_reference"] == pytest.approx((-1.0, 0.0, 1))  # seed 1 only
    assert lines["hbnn-m100"]["minutes"] == pytest.approx(20.0) and lines["ste-wlr10"]["minutes"] == pytest.approx(10.0)


@pytest.mark.parametrize("alias", sorted(accuracy.SAME_RUN))
def test_rows_sharing_a_result_are_the_same_training_configuration(alias):
    (protocol, row), (other_protocol, other_row) = alias, accuracy.SAME_RUN[alias]
    config, other = (_config(accuracy.command(p, r, seed=0)) for p, r in ((protocol, row), (other_protocol, other_row)))
    assert config.resolved_radius() == other.resolved_radius()  # a radius left to the recipe is the recipe's r
    ignored = {"run_dir": None, "radius": None}
    assert dataclasses.replace(config, **ignored) == dataclasses.replace(other, **ignored)


def test_a_same_run_row_copies_the_measured_result_instead_of_training(tmp_path, monkeypatch):
    monkeypatch.setattr(accuracy, "RESULTS", tmp_path)
    (protocol, row), (other_protocol, other_row) = next(iter(accuracy.SAME_RUN.items()))
    accuracy.save(other_protocol, {"protocol": other_protocol, "runs": {
        f"{other_row}-s0": _entry(other_row, 0, 0.7)}})
    monkeypatch.setattr(accuracy, "run_train", lambda *a: pytest.fail("trained a run that was already measured"))
    store = accuracy.load(protocol)
    accuracy.run(protocol, row, 0, store)
    assert store["runs"][f"{row}-s0"] == {**_entry(row, 0, 0.7), "reused_from": f"{other_protocol}/{other_row}-s0"}
    assert accuracy.load(protocol)["runs"] == store["runs"]
    with pytest.raises(pytest.fail.Exception, match="already measured"):  # seed 1 has no result to copy
        accuracy.run(protocol, row, 1, store)


def test_two_processes_writing_one_protocol_keep_each_others_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(accuracy, "RESULTS", tmp_path)
    first, second = accuracy.load("quick"), accuracy.load("quick")  # both loaded before either ran
    accuracy.record("quick", first, "ste-wlr10-s0", _entry("ste-wlr10", 0, 0.7))
    accuracy.record("quick", second, "hbnn-m100-wlr10-s0", _entry("hbnn-m100-wlr10", 0, 0.72))
    assert sorted(accuracy.load("quick")["runs"]) == ["hbnn-m100-wlr10-s0", "ste-wlr10-s0"]
    assert sorted(second["runs"]) == ["hbnn-m100-wlr10-s0", "ste-wlr10-s0"]  # and sees the other's run


def _write_history(run_dir, charts, flips):
    """history.csv of a 2-layer run: `charts[e]`, `flips[e]` are the layers' values after epoch e."""
    run_dir.mkdir(parents=True)
    lines = ["epoch,chart/a,chart/b,flips/a,flips/b"]
    lines += [f"{e},{c[0]}.0,{c[1]}.0,{f[0]},{f[1]}" for e, (c, f) in enumerate(zip(charts, flips))]
    (run_dir / "history.csv").write_text("\n".join(lines) + "\n")


def test_epc_stats_splits_flip_rates_by_chart_switch_and_reads_the_one_point_partner(tmp_path, monkeypatch):
    import epc_stats

    monkeypatch.setattr(epc_stats, "RESULTS", tmp_path)
    monkeypatch.setattr(epc_stats, "OUT", tmp_path / "epc.json")
    run = tmp_path / "epc4-loss-reexpress-m100-wlr10-s1"
    # layer a switches at epochs 1 and 2, layer b never; epoch 0 (the first selection) is not counted
    _write_history(run, [(0, 0), (2, 0), (1, 0)], [(0.9, 0.9), (0.3, 0.02), (0.2, 0.04)])
    assert epc_stats.partner_dir(run).name == "hbnn-m100-wlr10-s1"
    alone = epc_stats.run_stats(run)
    assert (alone["switch_fraction"], alone["flips_switch"], alone["flips_stay"]) == pytest.approx((0.5, 0.25, 0.03))
    assert alone["partner"] is None and alone["final_charts"] == [1, 0]
    steady = [{"chart/a": "0.0", "flips/a": "0.1"}, {"chart/a": "0.0", "flips/a": "0.05"}]
    assert epc_stats.switch_stats(steady)["flips_switch"] is None  # no switch: no number, not NaN
    partner = tmp_path / "hbnn-m100-wlr10-s1"
    partner.mkdir()
    (partner / "history.csv").write_text("epoch,flips/a,flips/b\n0,0.5,0.5\n1,0.05,0.01\n2,0.03,0.01\n")
    paired = epc_stats.run_stats(run)
    assert (paired["partner_flips_switch"], paired["partner_flips_stay"]) == pytest.approx((0.04, 0.01))
    rounds = [{"epoch": 1, "layers": {"a": {"switched": True, "flipped": 0.2}, "b": {"switched": False, "flipped": 0.0}}},
              {"epoch": 2, "layers": {"a": {"switched": True, "flipped": 0.1}, "b": {"switched": False, "flipped": 0.0}}}]
    (run / "charts.json").write_text(json.dumps(rounds))
    paired = epc_stats.run_stats(run)
    assert paired["flips_at_switch"] == pytest.approx(0.15)
    epc_stats.main([str(run)])
    assert list(json.loads((tmp_path / "epc.json").read_text()).values()) == [paired]
    with pytest.raises(SystemExit):  # a run without charts is not an EPC run
        epc_stats.main([str(partner)])


def test_epc_switch_cost_keep_flips_signs_reexpress_does_not_and_the_model_is_left_unchanged():
    import epc_stats
    import hbnn_larq

    # "keep" is not the last mode measured, so restoring it is not a coincidence.
    model = tiny_model(lambda: hbnn_larq.HyperbolicSign(cluster_size=3, cluster_radius=0.5, on_switch="keep", seed=4))
    model(np.zeros((1, 8, 8, 16), np.float32))
    before = [w.copy() for w in model.get_weights()]
    cost = epc_stats.switch_cost(model)
    assert cost["switch_flips_keep"] > 0.05 and cost["switch_flips_reexpress"] < 1e-3
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert all(q.on_switch == "keep" for _, q in hbnn_larq.quantizers.hyperbolic_quantizers(model))


@pytest.mark.slow
def test_stopping_a_benchmark_with_sigterm_stops_its_training_run(tmp_path):
    # A stand-in for train.py that writes its pid, then would train for a minute.
    child = f"import os, time; open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    driver = (f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); from pathlib import Path; "
              f"import bench_common; bench_common.run_train([sys.executable, '-c', {child!r}], "
              f"Path({str(tmp_path)!r}), Path({str(tmp_path / 'log')!r}))")
    benchmark = subprocess.Popen([sys.executable, "-c", driver])
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    benchmark.send_signal(signal.SIGTERM)
    assert benchmark.wait(timeout=30) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):  # killed and reaped by the benchmark, not orphaned
        os.kill(child_pid, 0)


def test_deploy_report_keeps_what_earlier_invocations_measured():
    earlier = {"machine": "m", "models": [{"label": "A", "ms": 1}, {"label": "B", "ms": 2}],
               "agreement": [{"source": "run", "top1_agreement": 1.0}]}
    measured = {"models": [{"label": "B", "ms": 3}], "agreement": [{"source": "zoo", "top1_agreement": 0.99}]}
    report = deploy.merge(earlier, measured)
    assert report["models"] == [{"label": "A", "ms": 1}, {"label": "B", "ms": 3}]
    assert [a["source"] for a in report["agreement"]] == ["run", "zoo"] and report["machine"] == "m"


def test_plot_panels_place_every_row_once_next_to_the_baseline():
    pytest.importorskip("matplotlib")
    import plots

    names = ["ste-wlr10", "ste-wlr10-wd0", "hbnn-m100-wlr10", "hbnn-m100-wlr10-wd0", "hbnn-m100", "epc4-loss-m100-wlr10",
             "recu+hbnn-m1", "ball-r0.5"]
    groups = dict(plots.panels(names, baseline="ste-wlr10"))
    assert all("ste-wlr10" in chosen for title, chosen in groups.items() if title != "other rows")
    assert groups["weight decay off (-wd0) vs on"] == ["hbnn-m100-wlr10", "hbnn-m100-wlr10-wd0", "ste-wlr10", "ste-wlr10-wd0"]
    assert groups["other rows"] == ["ball-r0.5"]
    placed = [n for chosen in groups.values() for n in chosen if n not in ("ste-wlr10", "hbnn-m100-wlr10")]
    assert sorted(placed) == sorted(set(names) - {"ste-wlr10", "hbnn-m100-wlr10"})


def test_plot_panels_are_not_repeated_when_only_the_reference_rows_are_run():
    pytest.importorskip("matplotlib")
    import plots

    # The first Imagenette runs: the HBNN reference row alone would fill three identical panels.
    groups = plots.panels(["ste-wlr10", "hbnn-m100-wlr10"], baseline="ste-wlr10")
    assert groups == [("step sizes: latent LR (STE) and points' multiplier (HBNN)", ["hbnn-m100-wlr10", "ste-wlr10"])]


def test_flip_figure_shows_the_tuned_baseline_and_the_best_hbnn_row_of_the_protocol():
    pytest.importorskip("matplotlib")
    import plots

    rows = {row: [_entry(row, 0, acc)] for row, acc in
            [("ste-wlr10", 0.64), ("ste-wlr100", 0.67), ("hbnn-m100-wlr10", 0.672), ("hbnn-m100-wlr30", 0.678)]}
    assert plots.flip_rows(rows, baseline="ste-wlr100") == ["ste-wlr10", "hbnn-m100-wlr10", "ste-wlr100", "hbnn-m100-wlr30"]
    # No HBNN row measured yet, and the baseline already among the defaults: nothing is repeated.
    assert plots.flip_rows({"ste-wlr10": rows["ste-wlr10"]}, baseline="ste-wlr10") == ["ste-wlr10"]


def test_deploy_reports_how_close_the_lce_disagreements_were():
    entry = {"max_probability_difference": 2e-6, "disagreement_max_keras_top2_gap": 3e-7}
    assert deploy.near_ties(entry) == "; max |p_LCE - p_Keras| 2.0e-06, Keras top-2 gap of the disagreements <= 3.0e-07"
    assert deploy.near_ties({**entry, "disagreement_max_keras_top2_gap": None}) == "; max |p_LCE - p_Keras| 2.0e-06"
    assert deploy.near_ties({"top1_agreement": 1.0}) == ""  # entries measured before the fields existed


def test_sign_flips_finds_lce_faithful_to_a_float64_reference():
    model = tiny_model("hyperbolic_sign", channels=(16, 16))
    randomize_batch_norm(model, 0)
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 16)).astype("float32")
    reference = deploy.float64_copy(model)
    assert {layer.compute_dtype for layer in reference.layers} == {"float64"}
    np.testing.assert_allclose(reference(x.astype("float64")).numpy(), model(x).numpy(), atol=1e-4)

    entry = deploy.sign_flips(model, x, "test")
    assert [row["layer"] for row in entry["layers"]] == [layer.name for layer in model.layers if "conv" in layer.name]
    for row in entry["layers"]:  # a conversion bug (padding, BN folding) would flip whole borders or channels
        assert row["activations"] == 4 * 8 * 8 * 16
        assert row["lce_flips"] == row["lce_flips_in_rounding_zone"] == row["lce_flips_unexplained"] == 0, row
    assert entry["outputs"]["lce_vs_keras_float64"]["max_probability_difference"] < 1e-4


def test_classify_flips_tells_rounding_inherited_and_unexplained_flips_apart():
    pre64 = np.array([[1e-7, 0.5, -0.3], [0.2, -0.4, 0.6], [0.9, 2e-6, -0.1]])
    lce = np.array([[-1.0, -1.0, -1.0], [1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]])  # flips: (0,0)(0,1) (2,0)(2,1)(2,2)
    counts, before = deploy.classify_flips(lce, pre64, np.array([False, False, True]))
    assert counts == {"lce_flips": 5, "lce_flips_in_rounding_zone": 2,
                      "lce_flips_unexplained": 1}  # (0,1); image 2 inherits its flips from an earlier layer
    assert before.tolist() == [True, False, True]
    assert deploy.sign(np.array([0.0, -0.0])).tolist() == [1.0, 1.0]


def test_radius_figure_reads_kind_and_r_from_the_row_name(tmp_path):
    pytest.importorskip("matplotlib")
    import plots

    assert plots.radius_of("ball-r0.05-wlr10") == ("ball", 0.05)
    assert plots.radius_of("boundary-r5.0-wlr10") == ("boundary", 5.0)
    assert plots.radius_of("ball-r5.0-m10-wlr10") == ("ball, points x10", 5.0)  # its own series
    assert plots.radius_of("hbnn-m100-wlr10") is None
    assert all(plots.radius_of(row) for row in accuracy.RADIUS_ROWS)
    rows = {row: [_entry(row, 0, acc)] for row, acc in [("ball-r0.05-wlr10", 0.72), ("ball-r5.0-wlr10", 0.70),
                                                         ("ball-r5.0-m10-wlr10", 0.71), ("boundary-r1.0-wlr10", 0.69)]}
    plots.plot_radius(rows, tmp_path / "radius.png", ("ste-wlr10", rows["ball-r5.0-wlr10"]))
    assert (tmp_path / "radius.png").stat().st_size > 0


def test_geometry_summary_prints_each_statistics_range_over_layers(tmp_path, monkeypatch, capsys):
    import geometry_stats

    monkeypatch.setattr(geometry_stats, "RESULTS", tmp_path)
    layer = {"point_radius_fraction": 0.26, "tanh_arg": 0.151, "agree_latent_sign": 0.73, "agree_point_sign": None}
    layers = [layer, {**layer, "point_radius_fraction": 0.374, "tanh_arg": 0.229, "agree_latent_sign": 0.655}]
    (tmp_path / "geometry-run-a.json").write_text(json.dumps({"source": "x", "layers": layers}))
    geometry_stats.main(["--summary", "run-a"])
    line = capsys.readouterr().out.splitlines()[-1].split()
    assert line == ["run-a", "26-37", "0.15-0.23", "66-73", "-"]
    with pytest.raises(SystemExit, match="geometry-missing.json does not exist"):
        geometry_stats.main(["--summary", "missing"])


# -- choose on validation, report on test (benchmarks/selection.py) ------------------------------
import selection  # noqa: E402


def _val_entry(row, seed, val, test):
    return {"row": row, "seed": seed, "val_accuracy": val, "final_test_accuracy": test}


def _selection_store():
    store = {"protocol": "quick-val", "runs": {}}

    def add(row, seed, val, test):
        store["runs"][accuracy.run_id(row, seed)] = _val_entry(row, seed, val, test)

    # On the selection seed, the row best on validation is worst on test: the test must not matter.
    add("ste-wlr10", 0, 0.70, 0.90)
    add("ste-wlr30", 0, 0.72, 0.10)
    add("norm-wlr100", 0, 0.71, 0.95)
    add("hbnn-m100-wlr10", 0, 0.74, 0.05)
    for seed, (ste, norm, hbnn) in zip(accuracy.CONFIRM_SEEDS, ((0.70, 0.60, 0.71), (0.72, 0.61, 0.74), (0.71, 0.62, 0.71))):
        add("ste-wlr30", seed, ste, ste)
        add("norm-wlr100", seed, norm, norm)
        add("hbnn-m100-wlr10", seed, hbnn, hbnn)
    return store


def test_selection_chooses_each_contender_on_validation_never_on_test():
    assert selection.chosen_rows(_selection_store()) == {"ste": "ste-wlr30", "norm": "norm-wlr100", "hbnn": "hbnn-m100-wlr10"}


def test_ties_go_to_sweep_order_and_the_reference_is_fixed_by_the_selection_seed():
    store = _selection_store()
    # stored after ste-wlr30 but first in sweep order: the tie goes to ste-wlr10, whatever the file's order
    store["runs"]["ste-wlr10-s0"] = store["runs"].pop("ste-wlr10-s0") | {"val_accuracy": 0.72}
    assert selection.chosen_rows(store)["ste"] == "ste-wlr10"
    store = _selection_store()
    for seed in accuracy.CONFIRM_SEEDS:  # sign-normalized better on the confirmation seeds' validation
        store["runs"][accuracy.run_id("norm-wlr100", seed)]["val_accuracy"] = 0.99
    assert {line["reference"] for line in selection.confirmation_table(store)} == {"ste-wlr30"}


def test_confirmation_pairs_fresh_seeds_against_the_baseline_best_on_validation():
    lines = {line["contender"]: line for line in selection.confirmation_table(_selection_store())}
    assert lines["ste"]["reference"] == "ste-wlr30"  # sign/STE beats sign-normalized on validation
    assert lines["hbnn"]["seeds"] == list(accuracy.CONFIRM_SEEDS)
    assert lines["hbnn"]["vs_reference"][0] == pytest.approx(100 * (0.01 + 0.02 + 0.0) / 3)
    assert lines["ste"]["vs_reference"] is None


def test_markdown_table_shows_each_choice_its_validation_and_paired_test_accuracy():
    table = selection.markdown_table(_selection_store()).splitlines()
    assert len(table) == 2 + 3 and table[0].startswith("| quick-val: VGG-Small")
    hbnn = next(line for line in table if "`hbnn-m100-wlr10`" in line)
    assert hbnn.startswith("| HBNN, ball | points ×100, latent ×10 (`hbnn-m100-wlr10`) | 74.00 | 72.00 ± 1.73 (n = 3) | +1.00 ± 1.00 (n = 3) |")
    assert "reference" in next(line for line in table if "`ste-wlr30`" in line)
    assert selection.describe_row("norm-wlr100") == "latent ×100"


def test_the_edge_rule_steps_beyond_a_best_row_at_the_end_of_what_its_contender_ran():
    assert accuracy.beyond_edge({(None, 10): 70.0, (None, 30): 60.0}) == [(None, 3)]
    assert accuracy.beyond_edge({(None, 3): 60.0, (None, 10): 70.0, (None, 30): 65.0}) == []
    # HBNN: along each knob swept at the best row's other knob; the points' alone at latent x3 is no sweep
    hbnn = {(100, 10): 70.0, (100, 30): 60.0, (100, 3): 72.0, (30, 10): 71.0}
    assert accuracy.beyond_edge(hbnn) == [(100, 1)]
    assert accuracy.beyond_edge({**hbnn, (100, 1): 71.0}) == []
    assert accuracy.beyond_edge({**hbnn, (100, 1): 73.0}) == [(100, 0.3)]
    assert accuracy.beyond_edge({(100, 10): 70.0, (300, 10): 71.0}) == [(1000, 10)]
    assert accuracy.beyond_edge({}) == []
    assert accuracy.beyond_edge({(None, 10): 0.7, (None, 30): 0.7}) == [(None, 3)]  # a tie: the first in sweep order
    with pytest.raises(ValueError, match="50 is not a step of LADDER"):
        accuracy.beyond_edge({(None, 50): 0.6, (None, 10): 0.5})
    assert accuracy.beyond_edge({(None, 10): 0.5, (None, 50): 0.6, (None, 100): 0.4}) == []  # inside: no ladder needed
    assert accuracy._row_name("hbnn", 30.0, 10.0) == "hbnn-m30-wlr10" and accuracy._row_name("ste", None, 0.3) == "ste-wlr0.3"


def test_rows_beyond_the_grid_follow_from_each_protocols_own_stored_results():
    grid = accuracy.SELECT_ROWS
    # the committed quick-val runs call for exactly the rows that were run beyond the grid, in order
    assert [row for row in accuracy.rows_for("quick-val") if row not in grid] == [
        "norm-wlr3", "hbnn-m10-wlr10", "bd-m10-wlr10", "hbnn-m3-wlr10"]
    store = {"runs": {f"{row}-s0": {"row": row, "seed": 0, "val_accuracy": 0.5} for row in grid}}
    store["runs"]["ste-wlr3-s0"]["val_accuracy"] = 0.6      # best at the grid's lower end
    store["runs"]["ste-wlr30-s7"] = {"row": "ste-wlr30", "seed": 7, "val_accuracy": 0.9}  # not the selection seed
    assert set(accuracy.select_rows(store)) - set(grid) == {"ste-wlr1"}
    del store["runs"]["ste-wlr100-s0"]                      # the grid not complete yet: no step beyond it
    assert set(accuracy.select_rows(store)) == set(grid)
    # the QuickNet evidence row: its own two-value grids, the same rule
    quicknet = {"runs": {"ste-wlr10-s0": {"row": "ste-wlr10", "seed": 0, "val_accuracy": 0.67},
                         "ste-wlr30-s0": {"row": "ste-wlr30", "seed": 0, "val_accuracy": 0.71}}}
    rows = accuracy.select_rows(quicknet, accuracy.QUICKNET_GRID)
    assert list(rows) == ["ste-wlr10", "bd-m30-wlr10", "norm-wlr100", "ste-wlr30", "bd-m30-wlr30", "norm-wlr300",
                          "ste-wlr100"]
    assert rows["bd-m30-wlr30"][1] == ["--quantizer", "hbnn-boundary", "--radius", "0.01", *accuracy.steps(30, 30)]


def test_validation_protocols_hold_out_a_split_and_their_rows_name_their_recipe():
    assert not set(accuracy.CONFIRM_SEEDS) & {accuracy.SELECT_SEED}
    for protocol in ("quick-val", "imagenette-val", "quicknet-val"):
        for row in accuracy.rows_for(protocol):
            config = _config(accuracy.command(protocol, row, seed=0))
            assert config.validation_split == 0.1 and config.precision == "mixed_bfloat16"
            recipe = {"ste": "ste_sign", "norm": "sign-normalized", "hbnn": "hbnn", "bd": "hbnn-boundary"}
            assert config.quantizer == recipe[accuracy.contender_of(row)], row
            if "-m" in row:
                assert config.resolved_point_lr_multiplier() == float(row.split("-m")[1].split("-")[0])


def test_the_select_stage_runs_the_grid_then_the_edge_rows_until_none_is_called_for(monkeypatch, tmp_path):
    """ste's best moves down the ladder (x3, then x1 wins; x0.3 loses); the ball fails one run, which
    is not retried; a contender not asked for is not run."""
    monkeypatch.setattr(accuracy, "RESULTS", tmp_path)
    score = {"ste-wlr3": 0.7, "ste-wlr1": 0.8, "ste-wlr0.3": 0.6}
    calls = []

    def fake_run(protocol, row, seed, store):
        calls.append(row)
        if row != "hbnn-m100-wlr30":
            accuracy.record(protocol, store, accuracy.run_id(row, seed),
                            {"row": row, "seed": seed, "val_accuracy": score.get(row, 0.5)})

    monkeypatch.setattr(accuracy, "run", fake_run)
    store = accuracy.load("quick-val")
    selection.run_select_stage("quick-val", ["ste", "hbnn"], store)
    grid = [row for row in accuracy.SELECT_ROWS if accuracy.contender_of(row) in ("ste", "hbnn")]
    assert calls == grid + ["ste-wlr1", "ste-wlr0.3"]
    assert len(store["runs"]) == len(calls) - 1


def test_paired_images_keeps_the_bits_and_counts_discordant_images():
    rng = np.random.default_rng(1)
    bits = rng.random(1001) < 0.7
    assert np.array_equal(image_bits.unpack(image_bits.pack(bits), 1001), bits)
    reference = np.zeros((3, 100), bool)
    reference[:, :70] = True
    contender = reference.copy()
    contender[:, 70:75] = True          # 5 images per seed only the contender gets right
    contender[:, 0] = False             # 1 only the reference gets right
    result = paired_images.compare(contender, reference, np.random.default_rng(0))
    assert result["discordant"] == [15, 3] and result["mean"] == pytest.approx(4.0)
    assert result["per_seed"] == pytest.approx([4.0] * 3)
    assert result["ci_images"][0] < 4.0 < result["ci_images"][1]
    assert result["mcnemar_p"] == pytest.approx(0.0047, abs=1e-3)   # z = 12 / sqrt(18)
    same = paired_images.compare(reference, reference, np.random.default_rng(0))
    assert same["mean"] == 0 and same["mcnemar_p"] == 1.0 and same["discordant"] == [0, 0]


def test_image_bits_keeps_each_reproduced_run_once_and_refuses_one_that_is_not(monkeypatch, tmp_path):
    import types

    import tensorflow as tf

    from tests.helpers import random_data

    x, y = random_data(40)
    inputs = tf.keras.Input(x.shape[1:])  # a model that normalises its own inputs, as today's zoo models do
    model = tf.keras.Model(inputs, tiny_model("ste_sign", channels=(4,))(
        tf.keras.layers.Activation("linear", name="input_normalization")(inputs)))
    correct = np.argmax(model.predict(x, verbose=0), axis=-1) == y
    runs = tmp_path / "runs"
    for key in ("ste-wlr10-s10", "ste-wlr10-s11"):
        (runs / key).mkdir(parents=True)
        model.save(runs / key / "model.keras")
    store = {"runs": {"ste-wlr10-s10": {"final_test_accuracy": float(correct.mean())},
                      "ste-wlr10-s11": {"final_test_accuracy": float(correct.mean()) + 0.1}}}  # not this model
    monkeypatch.setattr(accuracy, "load", lambda protocol: store)
    monkeypatch.setattr(image_bits, "path", lambda protocol: tmp_path / f"paired-{protocol}.json")
    test_split = types.SimpleNamespace(test=tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
    monkeypatch.setattr("hbnn_larq.training.data.load_dataset", lambda *args, **kwargs: test_split)

    paired = image_bits.record("quick-val", ["ste-wlr10-s10", "ste-wlr10-s12"], runs)  # s12: no run directory
    assert list(paired["runs"]) == ["ste-wlr10-s10"]
    assert np.array_equal(image_bits.unpack(paired["runs"]["ste-wlr10-s10"]["correct"], len(y)), correct)
    with pytest.raises(SystemExit, match="ste-wlr10-s11: the reloaded model scores"):
        image_bits.record("quick-val", ["ste-wlr10-s11"], runs)
    (runs / "ste-wlr10-s10" / "model.keras").unlink()  # stored bits need no model
    assert list(image_bits.load("quick-val")["runs"]) == ["ste-wlr10-s10"]
    assert image_bits.record("quick-val", ["ste-wlr10-s10"], runs) == image_bits.load("quick-val")


def test_stored_paired_analysis_agrees_with_the_confirmation_table():
    """The committed per-image bits of quick-val's confirmation runs reproduce the table's paired
    differences (the reloaded models are the runs the table reports) within a few images."""
    paired = json.loads((REPO / "benchmarks" / "results" / "paired-quick-val.json").read_text())
    results = paired_images.analyse("quick-val", paired)
    assert {r["row"] for r in results} == {"norm-wlr10", "hbnn-m10-wlr10", "bd-m30-wlr10"}
    for r in results:
        assert r["mean"] == pytest.approx(r["table"], abs=0.05)
        assert r["ci_seeds_and_images"][0] <= r["ci_images"][0] <= r["mean"] <= r["ci_images"][1]
