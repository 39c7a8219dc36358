"""Choose on validation, report on test: each contender's setting chosen on a held-out split,
then confirmed on fresh seeds, against the strongest baseline chosen the same way.

```bash
python benchmarks/selection.py --protocol quick-val --stage select      # seed 0: every contender's sweep
python benchmarks/selection.py --protocol quick-val --stage confirm     # each contender's choice, seeds 10-12 (+ each run's per-image test bits)
python benchmarks/selection.py --protocol quick-val --table             # print the two tables only
python benchmarks/selection.py --protocol quick-val --markdown          # the confirmation table, as in the README
```

The protocols (`quick-val`, `imagenette-val`; `quicknet-val`, issue 26's QuickNetSmall
evidence row: sign/STE and HBNN only, two confirmation seeds), the contenders (sign/STE, sign-normalized, HBNN in
the ball, HBNN ∂D), their sweeps (`SELECT_ROWS`) and the edge rule that extends a sweep whose best
row sits at its edge (`beyond_edge`) are defined in `benchmarks/accuracy.py`; runs
are stored with the other accuracy runs in `benchmarks/results/accuracy-<protocol>.json`, each
with its final validation accuracy (`val_accuracy`) and its test accuracy.

- **Selection table** (seed `SELECT_SEED`): validation accuracy only. Each contender's chosen row
  is its best on validation; the test accuracy of these runs is stored but not shown and never
  used.
- **Confirmation table**: the chosen rows on `CONFIRM_SEEDS` (fresh: no selection run used
  them): test accuracy, mean ± std, and the paired difference (same seeds) to the reference, the
  baseline (`BASELINES`) whose chosen row has the higher validation accuracy on the selection
  seed (fixed before any confirmation run).

Both tables are written into the protocol's JSON (`selection`, `confirmation`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import accuracy
import image_bits
from accuracy import BASELINES, CONFIRM_SEEDS, CONTENDERS, SELECT_SEED, contender_of, rows_for, run_id, validation_by_row


def chosen_rows(store: dict) -> dict[str, str]:
    """`{contender: its row with the best validation accuracy on the selection seed}` (a tie goes to
    the first row in sweep order, as in the edge rule, `accuracy.beyond_edge`)."""
    measured = validation_by_row(store, {SELECT_SEED})
    chosen = {}
    for contender in CONTENDERS:
        candidates = {row: measured[row][0] for row in rows_for(store["protocol"])
                      if row in measured and contender_of(row) == contender}
        if candidates:
            chosen[contender] = max(candidates, key=candidates.get)
    return chosen


def selection_table(store: dict) -> list[dict]:
    measured = validation_by_row(store, {SELECT_SEED})
    chosen = set(chosen_rows(store).values())
    return [{"row": row, "contender": contender_of(row), "val_accuracy": measured[row][0], "chosen": row in chosen}
            for row in rows_for(store["protocol"]) if row in measured]


def reference_baseline(store: dict, chosen: dict[str, str]) -> str | None:
    """The baseline contender whose chosen row has the higher validation accuracy on the selection
    seed: fixed by the select stage, before any confirmation run."""
    measured = validation_by_row(store, {SELECT_SEED})
    scores = {c: measured[chosen[c]][0] for c in BASELINES if c in chosen}
    return max(scores, key=scores.get) if scores else None


def confirm_seeds(protocol: str) -> tuple:
    """The fresh seeds of `protocol`'s confirmation runs (two for the QuickNet evidence row)."""
    return accuracy.QUICKNET_CONFIRM_SEEDS if protocol == "quicknet-val" else CONFIRM_SEEDS


def confirmation_runs(store: dict) -> list[str]:
    """The run ids of the confirmation stage: each contender's chosen row on each fresh seed."""
    chosen = chosen_rows(store)
    return [run_id(row, seed) for row in chosen.values() for seed in confirm_seeds(store["protocol"])]


def _test_by_seed(store: dict, row: str) -> dict[int, float]:
    return {seed: 100 * store["runs"][run_id(row, seed)]["final_test_accuracy"]
            for seed in confirm_seeds(store["protocol"]) if run_id(row, seed) in store["runs"]}


def confirmation_table(store: dict) -> list[dict]:
    chosen = chosen_rows(store)
    reference = reference_baseline(store, chosen)
    reference_tests = _test_by_seed(store, chosen[reference]) if reference else {}
    lines = []
    for contender, row in chosen.items():
        tests = _test_by_seed(store, row)
        if not tests:
            continue
        diffs = [tests[s] - reference_tests[s] for s in tests if s in reference_tests]
        val = validation_by_row(store, set(confirm_seeds(store["protocol"]))).get(row, [])
        lines.append({
            "contender": contender, "row": row, "seeds": sorted(tests),
            "test_mean": statistics.mean(tests.values()),
            "test_std": statistics.stdev(tests.values()) if len(tests) > 1 else 0.0,
            "val_mean": statistics.mean(val) if val else None,
            "reference": chosen[reference] if reference else None,
            "vs_reference": None if contender == reference or not diffs else (
                statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0, len(diffs)),
        })
    return lines


# How the README names each contender and each protocol (`markdown_table`).
LABELS = {"ste": "sign/STE", "norm": "sign-normalized", "hbnn": "HBNN, ball", "bd": "HBNN, ∂D (r = 0.01)"}
SETTINGS = {"quick-val": "VGG-Small ×0.25, CIFAR-10, 10 epochs",
            "imagenette-val": "ResNet-18 ×0.25, Imagenette 128 px, 16 epochs",
            "quicknet-val": "QuickNetSmall, Imagenette 112 px, 16 epochs"}


def describe_row(row: str) -> str:
    """`hbnn-m10-wlr10` -> "points ×10, latent ×10"."""
    names = {"m": "points", "wlr": "latent"}
    knobs = [(prefix, part[len(prefix):]) for part in row.split("-")[1:] for prefix in names
             if part.startswith(prefix) and part[len(prefix):].replace(".", "").isdigit()]
    return ", ".join(f"{names[prefix]} ×{value}" for prefix, value in knobs)


def markdown_table(store: dict) -> str:
    """The confirmation table as the README shows it (`--markdown`): per contender, its setting
    chosen on validation, that run's validation accuracy, and test accuracy on the fresh seeds,
    paired against the reference baseline."""
    protocol = store["protocol"]
    validation = {line["row"]: line["val_accuracy"] for line in selection_table(store)}
    seeds = confirm_seeds(protocol)
    lines = [f"| {protocol}: {SETTINGS[protocol]} | chosen on validation (seed {SELECT_SEED}) | val % "
             f"| test %, seeds {', '.join(map(str, seeds))} | paired difference vs the reference |",
             "|---|---|---|---|---|"]
    confirmed = confirmation_table(store)
    baselines = sum(line["contender"] in BASELINES for line in confirmed)
    role = "reference (the better baseline on validation)" if baselines > 1 else "reference (the baseline)"
    for line in confirmed:
        paired = line["vs_reference"]
        versus = (role if line["row"] == line["reference"] else
                  f"{paired[0]:+.2f} ± {paired[1]:.2f} (n = {paired[2]})" if paired else "-")
        lines.append(f"| {LABELS[line['contender']]} | {describe_row(line['row'])} (`{line['row']}`) "
                     f"| {validation[line['row']]:.2f} | {line['test_mean']:.2f} ± {line['test_std']:.2f} "
                     f"(n = {len(line['seeds'])}) | {versus} |")
    return "\n".join(lines)


def run_select_stage(protocol: str, contenders, store: dict) -> None:
    """Run the select stage of `protocol` on `SELECT_SEED`: every contender's grid, then round after
    round the rows the edge rule calls for (`accuracy.beyond_edge`), until no contender's best row
    sits at an edge of what it ran (or a run failed: it is not retried here)."""
    attempted = set()
    while True:
        jobs = [row for row in rows_for(protocol) if contender_of(row) in contenders
                and run_id(row, SELECT_SEED) not in store["runs"] and row not in attempted]
        if not jobs:
            return
        for row in jobs:
            attempted.add(row)
            accuracy.run(protocol, row, SELECT_SEED, store)


def print_tables(store: dict) -> None:
    protocol = store["protocol"]
    print(f"protocol: {protocol}  ({' '.join(accuracy.PROTOCOLS[protocol])})")
    print(f"\nselection on validation (seed {SELECT_SEED}; test accuracy not shown)")
    print(f"{'row':22s} {'contender':9s} {'val acc %':>9s}")
    for line in selection_table(store):
        print(f"{line['row']:22s} {line['contender']:9s} {line['val_accuracy']:9.2f}{'  <- chosen' if line['chosen'] else ''}")
    lines = confirmation_table(store)
    if not lines:
        return
    print(f"\nconfirmation on fresh seeds {', '.join(map(str, confirm_seeds(protocol)))}: test accuracy")
    print(f"{'contender':9s} {'row':22s} {'seeds':>5s} {'test acc %':>15s} {'val %':>6s}  paired difference vs the reference")
    for line in lines:
        paired = line["vs_reference"]
        versus = "(reference: the strongest baseline on validation)" if line["row"] == line["reference"] else (
            "" if paired is None else f"{paired[0]:+.2f} ± {paired[1]:.2f} vs {line['reference']} (n={paired[2]})")
        val = f"{line['val_mean']:6.2f}" if line["val_mean"] is not None else "     -"
        print(f"{line['contender']:9s} {line['row']:22s} {len(line['seeds']):5d} "
              f"{line['test_mean']:8.2f} ± {line['test_std']:4.2f} {val}  {versus}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=[p for p in accuracy.PROTOCOLS if p.endswith("-val")], default="quick-val")
    parser.add_argument("--stage", choices=("select", "confirm"), help="what to run (nothing: print the tables)")
    parser.add_argument("--contenders", nargs="*", choices=list(CONTENDERS), default=list(CONTENDERS))
    parser.add_argument("--table", action="store_true", help="only print the tables")
    parser.add_argument("--markdown", action="store_true",
                        help="only print the confirmation table as the README shows it")
    args = parser.parse_args(argv)

    store = accuracy.load(args.protocol)
    if args.markdown:
        print(markdown_table(store))
        return
    if args.stage and not args.table:
        started = time.time()
        if args.stage == "select":
            run_select_stage(args.protocol, args.contenders, store)
        else:
            chosen = chosen_rows(store)
            contenders = [c for c in args.contenders if any(contender_of(r) == c for r in rows_for(args.protocol))]
            missing = [c for c in contenders if c not in chosen]
            if missing:
                parser.error(f"no selection run yet for {', '.join(missing)}: run --stage select first")
            for row, seed in [(chosen[c], seed) for seed in confirm_seeds(args.protocol) for c in contenders]:
                accuracy.run(args.protocol, row, seed, store)
                # each run's per-image test bits while its model is on disk (run folders do not outlive a machine)
                try:
                    image_bits.record(args.protocol, confirmation_runs(store), accuracy.RUNS / args.protocol)
                except SystemExit as error:  # a model that does not reproduce its run: say so, keep the queue going
                    print(f"image_bits: {error}")
        print(f"done in {(time.time() - started) / 60:.1f} min")
    if store["runs"] and args.stage and not args.table:  # printing the tables writes nothing
        with accuracy.stored(args.protocol) as store:
            store["selection"] = selection_table(store)
            store["confirmation"] = confirmation_table(store)
    print_tables(store)


if __name__ == "__main__":
    main()
