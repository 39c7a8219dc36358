"""Train, measure and publish the zoo's shipped CIFAR-10 weights (`weights="cifar10"`), in segments.

A full-width training of 40-60 epochs outlasts a working sitting (3 h, hard stop), and the next
sitting may run on another machine, without `benchmarks/runs/` (checkpoints, with their latent
weights and optimizer state, are never committed). So each model is trained by a *plan* (`PLANS`):
one warm-up + cosine schedule of `epochs` epochs, cut into segments of `segment` epochs. Segment k
is one plain `train.py` command (printed before it runs, as a user would type it):

    python train.py --model M --dataset cifar10 <recipe> --epochs E --first-epoch k*S --stop-epoch (k+1)*S
        --init-weights benchmarks/results/zoo-segments/<plan>-seg<k-1>.npz
        --run-dir benchmarks/runs/zoo/<plan>-seg<k> ...

It follows the learning rate of the single E-epoch run and continues its epoch numbering; it
starts from the previous segment's bit-packed weights (latent kernels rebuilt at their initial
size, HBNN points at the origin, momentum at zero: `hbnn_larq/training/warm_start.py`), so a
segmented run is close to, not identical with, one uninterrupted run. When a segment completes,
its `weights.npz` and a JSON record (command, epochs, per-epoch test accuracy, training time,
machine and CPU, precision) are copied to `benchmarks/results/zoo-segments/<plan>-seg<k>.{npz,json}`.
That committed folder alone says which segment is next: **commit it at the end of every sitting**.

- A segment interrupted on the same machine resumes from its last completed epoch when the script
  is run again (same run directory, `BackupAndRestore`).
- On a new machine an interrupted segment restarts from the committed weights of the segment
  before it (the epochs it had done are lost): a segment must fit in one sitting.
- When a plan's last segment completes, its weights are measured on the whole CIFAR-10 test set
  and on a fixed seeded slice of 1000 test images (what `tests/test_zoo_pretrained.py` re-checks),
  summarised in `zoo-segments/<plan>.json`, and, for a plan that ships, registered as
  `weights="cifar10"` with every segment in the provenance (`benchmarks/results/zoo-weights.json`)
  only if they beat the shipped file's test accuracy (otherwise the script says so).

```bash
python benchmarks/zoo_weights.py --plans vggsmall-hbnn           # the next segment of one plan
python benchmarks/zoo_weights.py --models vggsmall --segments 1  # the next segment of each VGG-Small plan
python benchmarks/zoo_weights.py --table                         # progress, next commands, what is published
git add benchmarks/results/zoo-segments                          # then commit, before the sitting ends
```

Segments run one after the other, plan by plan; each is sized to take most of a sitting, so
name one plan per sitting (`--plans`): without `--plans`/`--models` every plan is advanced.

Changing a plan's numbers changes its schedule: committed segments made by other commands are
refused (rename the plan, or move its files out of `zoo-segments/`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import sys
from pathlib import Path

import accuracy
import bench_common
from bench_common import ROOT, printable_command, run_train

RESULTS = bench_common.RESULTS / "zoo-weights.json"
SEGMENTS = bench_common.RESULTS / "zoo-segments"  # committed: <plan>-seg<k>.npz/.json, <plan>.json
RUNS = bench_common.RUNS / "zoo"  # not committed: run directories (checkpoints) and logs
WEIGHTS_DIR = None  # where register_weights publishes: None is the package's hbnn_larq/zoo/weights/
NAME = "cifar10"
# The test-set slice the shipped entry records and the test suite re-measures.
SLICE = {"dataset": "cifar10", "max_test_examples": 1000, "seed": 0}


@dataclasses.dataclass(frozen=True)
class Plan:
    """One long training run of `model`, in segments of `segment` epochs (the last may be shorter).

    `recipe`: the `train.py` flags of the recipe; `ship`: whether its final weights may become the
    shipped `weights="cifar10"` (the sign/STE twin is a baseline, measured but not shipped)."""

    model: str
    name: str
    epochs: int
    segment: int
    recipe: tuple[str, ...]
    label: str
    precision: str = "mixed_bfloat16"
    ship: bool = True

    @property
    def key(self) -> str:
        return f"{self.model}-{self.name}"

    @property
    def segments(self) -> int:
        return -(-self.epochs // self.segment)

    def bounds(self, k: int) -> tuple[int, int]:
        """`(first_epoch, stop_epoch)` of segment k: it trains epochs first_epoch + 1 .. stop_epoch."""
        return k * self.segment, min((k + 1) * self.segment, self.epochs)


# The recipes are issue #27's choices on CIFAR-10's validation split (the quick-val protocol's
# select stage, seed 0: `python benchmarks/selection.py --protocol quick-val --table`): HBNN's best
# on validation, the ∂D map at r = 0.01 with points x30 and latent x10 (`bd-m30-wlr10`), and the
# sign/STE baseline's best, latent x10 (`ste-wlr10`); SGD 0.9, lr 0.1, cosine with train.py's
# default warm-up min(5, epochs // 20), batch 256, wd 5e-4. They were chosen at width 0.25 and
# 10 epochs: the long runs test whether the choice carries over.
HBNN_ROW, STE_ROW = "bd-m30-wlr10", "ste-wlr10"
HBNN = tuple(accuracy.SELECT_ROWS[HBNN_ROW][1])
STE = tuple(accuracy.SELECT_ROWS[STE_ROW][1])
# Segment lengths fit a 3-hour sitting on a CPU with AMX under mixed_bfloat16 (docs/results.md,
# Training cost: ~5 min per VGG-Small epoch, ~9 min per ResNet-18 epoch on 2 cores; ResNet-34
# estimated at twice ResNet-18), leaving time for the per-epoch test evaluation and the export.
# Without AMX/avx512_bf16, bfloat16 is slower than float32 and these segments do not fit.
PLANS = {plan.key: plan for plan in (
    Plan("vggsmall", "hbnn", epochs=60, segment=20, recipe=HBNN, label=f"HBNN ∂D r=0.01, {HBNN_ROW}"),
    # The HBNN-vs-baseline pair at the long budget: same schedule, sign/STE.
    Plan("vggsmall", "ste", epochs=60, segment=20, recipe=STE, label=f"sign/STE, {STE_ROW}", ship=False),
    Plan("resnet18", "hbnn", epochs=60, segment=12, recipe=HBNN, label=f"HBNN ∂D r=0.01, {HBNN_ROW}"),
    Plan("resnet34", "hbnn", epochs=60, segment=6, recipe=HBNN, label=f"HBNN ∂D r=0.01, {HBNN_ROW}"),
)}
MODELS = sorted({plan.model for plan in PLANS.values()})


def segment_file(plan: Plan, k: int, suffix: str) -> Path:
    """The committed file of segment k: `.npz` (its weights) or `.json` (its record)."""
    return SEGMENTS / f"{plan.key}-seg{k}{suffix}"


def summary_file(plan: Plan) -> Path:
    return SEGMENTS / f"{plan.key}.json"


def run_dir(plan: Plan, k: int) -> Path:
    return RUNS / f"{plan.key}-seg{k}"


def command(plan: Plan, k: int) -> list[str]:
    """The `train.py` command of segment k of `plan`."""
    first, stop = plan.bounds(k)
    cmd = [sys.executable, str(ROOT / "train.py"), "--model", plan.model, "--dataset", "cifar10", *plan.recipe,
           "--epochs", str(plan.epochs), "--first-epoch", str(first), "--stop-epoch", str(stop),
           "--precision", plan.precision, "--seed", "0"]
    if k > 0:
        cmd += ["--init-weights", str(segment_file(plan, k - 1, ".npz"))]
    if k < plan.segments - 1:
        cmd.append("--no-export")  # only the final weights are converted and checked in LCE
    return cmd + ["--run-dir", str(run_dir(plan, k)), "--verbose", "2"]


def done_segments(plan: Plan) -> int:
    """How many segments of `plan` the committed folder holds (segments 0 .. n-1).

    # Raises
    SystemExit: a committed segment was made by another command than the plan's.
    """
    k = 0
    while segment_file(plan, k, ".json").is_file() and segment_file(plan, k, ".npz").is_file():
        made_by = json.loads(segment_file(plan, k, ".json").read_text())["command"]
        if made_by != printable_command(command(plan, k)):
            raise SystemExit(f"{_shown(segment_file(plan, k, '.json'))} was made by\n  {made_by}\nnot by plan {plan.key}'s\n  "
                             f"{printable_command(command(plan, k))}\nThe plan changed: rename it, or move its "
                             f"segments out of {_shown(SEGMENTS)}.")
        k += 1
    return k


def segment_record(plan: Plan, k: int, cmd: list[str], results: dict) -> dict:
    """The committed record of segment k, from its run's `results.json`."""
    first, stop = plan.bounds(k)
    config = results["config"]
    made = (config["model"], config["epochs"], config["first_epoch"], config["stop_epoch"], config["precision"])
    if made != (plan.model, plan.epochs, first, stop, plan.precision):
        raise SystemExit(f"{_shown(run_dir(plan, k))} holds another run (model, epochs, first/stop epoch, precision: {made}); "
                         f"remove it and run the script again.")
    return {
        "plan": plan.key, "segment": k, "segments": plan.segments,
        "command": printable_command(cmd),
        "epochs": plan.epochs, "first_epoch": first, "stop_epoch": stop,
        "precision": plan.precision,
        "per_epoch": [{key: e.get(key) for key in ("epoch", "train_accuracy", "test_accuracy", "lr", "seconds")}
                      for e in results["epochs"]],
        "test_accuracy": results["final"]["test_accuracy"],
        "train_time_s": results["train_time_s"],
        "machine": results.get("machine"),
        "versions": results.get("versions"),
        "deployment": results.get("deployment"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def run_segment(plan: Plan, k: int) -> dict | None:
    """Train (or resume) segment k and commit its weights and record; None if it did not finish."""
    cmd = command(plan, k)
    first, stop = plan.bounds(k)
    print(f"{plan.key}: segment {k + 1}/{plan.segments}, epochs {first + 1}-{stop} of {plan.epochs}\nrun: "
          f"{printable_command(cmd)}", flush=True)
    code, results = run_train(cmd, run_dir(plan, k), RUNS / f"{plan.key}-seg{k}.log")
    if results is None:
        start = _shown(segment_file(plan, k - 1, ".npz")) if k else "scratch"
        print(f"{plan.key}: segment {k + 1} not finished (exit {code}, log {_shown(RUNS / f'{plan.key}-seg{k}.log')}). "
              f"Run the script again: on this machine it resumes from the last completed epoch, on another one it "
              f"restarts the segment from {start}.", flush=True)
        return None
    record = segment_record(plan, k, cmd, results)
    SEGMENTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir(plan, k) / "weights.npz", segment_file(plan, k, ".npz"))
    _write_json(segment_file(plan, k, ".json"), record)  # written last: it marks the segment done
    print(f"{plan.key}: segment {k + 1}/{plan.segments} done, test top-1 {100 * record['test_accuracy']:.2f} % "
          f"after epoch {stop}; commit {_shown(SEGMENTS)}/", flush=True)
    return record


def load_on_cifar10(model_name: str, weights, *, batch_size: int = 250, **dataset_kwargs):
    """The zoo model loaded from the weights file `weights` (at the width it was saved with) and the
    CIFAR-10 dataset it is measured on (`dataset_kwargs` select the test examples).

    # Returns
    `(model, dataset)`.
    """
    from hbnn_larq import zoo
    from hbnn_larq.training import data

    dataset = data.load_dataset("cifar10", batch_size=batch_size, max_train_examples=batch_size, download=False,
                                **dataset_kwargs)
    model = zoo.get_model(model_name, weights=weights, input_shape=dataset.input_shape,
                          num_classes=dataset.num_classes, width=zoo.pretrained.read_metadata(weights)["width"])
    return model, dataset


def accuracy(model_name: str, weights, **dataset_kwargs) -> float:
    """Top-1 accuracy of the zoo model loaded from the weights file `weights` on the CIFAR-10 test split."""
    model, dataset = load_on_cifar10(model_name, weights, **dataset_kwargs)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return float(model.evaluate(dataset.test, verbose=0)[1])


def load_records(plan: Plan, count: int | None = None) -> list[dict]:
    count = done_segments(plan) if count is None else count
    return [json.loads(segment_file(plan, k, ".json").read_text()) for k in range(count)]


def provenance_of(plan: Plan, records: list[dict]) -> dict:
    """What the registry records about a completed plan: every segment, summed hours, the machines."""
    weights = segment_file(plan, plan.segments - 1, ".npz")
    slice_args = {k: v for k, v in SLICE.items() if k != "dataset"}
    machines = [r.get("machine") or {} for r in records]
    return {
        "plan": plan.key,
        "commands": [r["command"] for r in records],
        "epochs": plan.epochs,
        "precision": plan.precision,
        "segments": [{"epochs": f"{r['first_epoch'] + 1}-{r['stop_epoch']}", "test_accuracy": r["test_accuracy"],
                      "train_time_h": round(r["train_time_s"] / 3600, 2), "cpu_model": m.get("cpu_model"),
                      "cores": m.get("cores"), "finished": r.get("finished")} for r, m in zip(records, machines)],
        "train_time_h": round(sum(r["train_time_s"] for r in records) / 3600, 2),
        "core_hours": round(sum(r["train_time_s"] * (m.get("cores") or 1) for r, m in zip(records, machines)) / 3600, 1),
        "machines": sorted({f"{m.get('cpu_model')} ({m.get('cores')} cores)" for m in machines}),
        "test_accuracy_at_end_of_training": records[-1]["test_accuracy"],
        "test_accuracy_per_epoch": [e["test_accuracy"] for r in records for e in r["per_epoch"]],
        "test_accuracy": accuracy(plan.model, weights),
        "slice": {**SLICE, "accuracy": accuracy(plan.model, weights, **slice_args)},
        "versions": records[-1].get("versions"),
        "deployment": records[-1].get("deployment"),
    }


def shipped_accuracy(model: str) -> float | None:
    """The test accuracy recorded for the shipped `weights="cifar10"` of `model` (None: none shipped)."""
    from hbnn_larq.zoo import pretrained

    path = Path(WEIGHTS_DIR or pretrained.WEIGHTS_DIR) / pretrained.REGISTRY_FILENAME
    registry = json.loads(path.read_text()) if path.is_file() else {}
    return registry.get(model, {}).get(NAME, {}).get("provenance", {}).get("test_accuracy")


def finish(plan: Plan, store: dict) -> dict:
    """Measure a completed plan, write `zoo-segments/<plan>.json` and, if the plan ships and beats
    the shipped weights' test accuracy, register its weights as `weights="cifar10"` (into `store`)."""
    from hbnn_larq import zoo

    provenance = provenance_of(plan, load_records(plan, plan.segments))
    summary = {"plan": plan.key, "ship": plan.ship, "published": False, "provenance": provenance}
    new = provenance["test_accuracy"]
    if plan.ship:
        shipped = summary["shipped_accuracy_before"] = shipped_accuracy(plan.model)
        if shipped is None or new > shipped:
            description = (f"CIFAR-10, {plan.label}, {plan.epochs} epochs in {plan.segments} segments "
                           f"({plan.precision}), top-1 {100 * new:.2f} %")
            entry = zoo.register_weights(NAME, segment_file(plan, plan.segments - 1, ".npz"), description=description,
                                         provenance=provenance, weights_dir=WEIGHTS_DIR)
            store[plan.model] = {"model": plan.model, "name": NAME, **entry}
            _write_json(RESULTS, store)
            summary["published"] = True
            print(f"{plan.key}: published as {plan.model} weights={NAME!r}, test top-1 {100 * new:.2f} %"
                  + ("" if shipped is None else f" (was {100 * shipped:.2f} %)"), flush=True)
        else:
            print(f"{plan.key}: test top-1 {100 * new:.2f} % is not above the shipped {plan.model} weights' "
                  f"{100 * shipped:.2f} %: the shipped file stays.", flush=True)
    else:
        print(f"{plan.key}: complete, test top-1 {100 * new:.2f} % (a baseline plan: not shipped).", flush=True)
    _write_json(summary_file(plan), summary)
    return summary


def advance(plan: Plan, segments: int, store: dict) -> bool:
    """Run up to `segments` next segments of `plan`, then finish it if it is complete; False if a segment failed."""
    for _ in range(segments):
        k = done_segments(plan)
        if k == plan.segments:
            break
        if run_segment(plan, k) is None:
            return False
    if done_segments(plan) == plan.segments and not summary_file(plan).is_file():
        finish(plan, store)
    return True


def has_bf16_hardware() -> bool:
    """Whether this CPU has AMX or avx512_bf16 (as `hbnn_larq.precision.cpu_bf16_flags`, without TensorFlow)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown: do not warn
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


def _shown(path: Path) -> str:
    """`path` relative to the repository root, as in printed commands."""
    return printable_command([str(path)])


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(staging, path)


def load_store() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def print_plans(plans) -> None:
    header = f"{'plan':15s} {'segments':>8s} {'epochs':>7s} {'precision':15s} {'train h':>7s}  test top-1 % after each segment"
    print(header)
    print("-" * len(header))
    for plan in plans:
        records = load_records(plan)
        done = records[-1]["stop_epoch"] if records else 0
        hours = sum(r["train_time_s"] for r in records) / 3600
        after = " ".join(f"{100 * r['test_accuracy']:.1f}" for r in records) or "-"
        print(f"{plan.key:15s} {len(records):>4d}/{plan.segments:<3d} {done:>3d}/{plan.epochs:<3d} {plan.precision:15s} "
              f"{hours:7.2f}  {after}")
    for plan in plans:
        k = done_segments(plan)
        if k < plan.segments:
            print(f"{plan.key} next: {printable_command(command(plan, k))}")
        elif summary_file(plan).is_file():
            summary = json.loads(summary_file(plan).read_text())
            state = "published" if summary["published"] else "not shipped" if not plan.ship else "not above the shipped"
            print(f"{plan.key}: complete, test top-1 {100 * summary['provenance']['test_accuracy']:.2f} % ({state})")


def print_table(store: dict) -> None:
    from hbnn_larq import zoo

    header = f"{'model':10s} {'weights':8s} {'epochs':>6s} {'train h':>7s} {'test top-1 %':>12s} {'slice %':>8s} {'MB':>6s}"
    print(header)
    print("-" * len(header))
    for model, entry in sorted(store.items()):
        p = entry["provenance"]
        size = zoo.registered_path(model, entry["name"]).stat().st_size / 1e6
        print(f"{model:10s} {entry['name']:8s} {p['epochs']:6d} {p['train_time_h']:7.2f} "
              f"{100 * p['test_accuracy']:12.2f} {100 * p['slice']['accuracy']:8.2f} {size:6.2f}")
    for model, entry in sorted(store.items()):
        curve = entry["provenance"].get("test_accuracy_per_epoch")
        if curve:
            print(f"{model}: test top-1 % after each epoch: " + " ".join(f"{100 * a:.1f}" for a in curve))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", choices=MODELS, default=MODELS, help="run the plans of these models")
    parser.add_argument("--plans", nargs="*", choices=sorted(PLANS), help="only these plans (default: every plan of --models)")
    parser.add_argument("--segments", type=int, default=1, help="segments to run per plan (default: 1)")
    parser.add_argument("--table", action="store_true", help="only print the plans' progress and what is published")
    args = parser.parse_args(argv)
    plans = [plan for key, plan in PLANS.items() if plan.model in args.models and (args.plans is None or key in args.plans)]
    store = load_store()
    ok = True
    if not args.table:
        if any(p.precision == "mixed_bfloat16" for p in plans) and not has_bf16_hardware():
            print("warning: this CPU has neither AMX nor avx512_bf16: mixed_bfloat16 trains slower than float32 here, "
                  "and a segment sized for a 3-hour sitting on an AMX CPU will not finish in one.", flush=True)
        for plan in plans:
            ok = advance(plan, args.segments, store) and ok
    print_plans(plans)
    print()
    print_table(store)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
