"""Benchmark the generated repo's drift monitor: flat memory as the log grows; vs Evidently.

It bakes the template with its defaults into build/bench-monitoring and runs `make setup` there
(or reuses --project, a baked repo with its .venv). Then, with the baked repo's interpreter:

1. Trains the champion in-process on the sample data (params.yaml as baked), keeps its training
   profile, and logs N records (--rows, default 1,000,000) into a SQLite prediction_log, in three
   growing steps (100k, 300k, N). The logged rows are `make_sample(N, drift=True)`: every row has
   `monthly_charges` shifted up and `contract` leaning to month-to-month; the other five features
   are drawn from the training distribution. After each step `monitor()` runs over the whole
   window in a fresh process, which reports its wall time and peak RSS (ru_maxrss).
2. Runs Evidently's DataDriftPreset (evidently 0.7.23, in its own venv with pandas 2) on the same
   reference (the training rows) and current data (the N logged rows, from Parquet), and compares
   verdicts and time with ours on the largest step.
3. Measures the writer's CPU per 100 records, without and with rollups on a fresh log, and on
   the full log with random (UUIDv4) request ids against the service's time-ordered (UUIDv7)
   ones: with random ids every insert dirties a page anywhere in the primary-key index.

Figures only: it prints PASS/MISS for the goals and never fails on them.

    .venv/bin/python bench/monitoring.py                          # bake, then measure 1M rows
    .venv/bin/python bench/monitoring.py --rows 300000 \
        --project build/bench-monitoring/project/churn-model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
STEP_TIMEOUT = 3600
BATCH = 500  # PredictionLog's default batch_size
COST_ROWS = 20_000  # records for the writer-cost measurement
SHIFTED = ("monthly_charges", "contract")

# Runs inside the baked repo's venv; argv: work dir, command, [arguments].
HELPER = r"""
import json, os, resource, sys, time, uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

work, command = Path(sys.argv[1]), sys.argv[2]
END = datetime(2026, 7, 1, tzinfo=UTC)
START = END - timedelta(days=1)
THRESHOLDS = {"psi": 0.2, "alpha": 0.01, "min_records": 200, "bias": 0.25}
BATCH = 500  # PredictionLog's default batch_size
package = os.environ["BENCH_PACKAGE"]


def load(name):
    return __import__(f"{package}.{name}", fromlist=["_"])


if command == "prepare":
    import joblib
    import numpy as np
    import pandas as pd

    config, datalib, training = load("config"), load("data"), load("training")
    sample = load("sample")
    params = config.load_params(Path("params.yaml"))
    schema = datalib.Schema.from_params(params["data"], params["model"]["task"])
    frame = datalib.validate(datalib.load_source(params["data"], schema.task, None), schema)
    model, x_train, x_valid, metrics = training.fit(frame, schema, params)
    record = training.run_record(model, x_train, x_valid, metrics, frame, schema, params, "md5")
    champion = {
        "name": params["model"]["name"],
        "version": "1",
        "task": schema.task,
        "classes": training.classes_of(model, schema.task),
        "profile": record["profile"],
        "features": list(schema.features),
    }
    (work / "champion.json").write_text(json.dumps(champion))
    joblib.dump(model, work / "model.joblib")
    x_train.to_parquet(work / "reference.parquet")
    rows = int(sys.argv[3])
    current = sample.make_sample(rows, 2026, schema.task, schema.target, drift=True)
    current[list(schema.features)].to_parquet(work / "current.parquet")
    print(json.dumps({"reference_rows": len(x_train), "current_rows": rows}))

elif command in ("append", "writer-cost", "key-cost"):
    import joblib
    import numpy as np
    import pandas as pd

    training = load("training")
    PredictionLog = load("monitoring.prediction_log").PredictionLog
    new_request_id = load("serving.routers.predict").new_request_id
    champion = json.loads((work / "champion.json").read_text())
    model = joblib.load(work / "model.joblib")
    names = champion["features"]
    classes = [str(c) for c in champion["classes"] or []]

    # The records the service would log for these rows, spread evenly over the day.
    # Request ids as the service makes them (time-ordered UUIDv7), or random UUIDv4 ones.
    def records_of(part, first, total, ids="v7"):
        features = part[names].astype(object).where(part[names].notna(), None)
        prediction, proba = training.predict(model, features, champion["task"])
        labels = np.asarray(prediction).tolist()
        step = timedelta(days=1) / total
        times = [START + step * (first + i) for i in range(len(part))]
        return [
            {
                "request_id": (
                    new_request_id(int(times[i].timestamp() * 1000))
                    if ids == "v7"
                    else uuid.uuid4().hex
                ),
                "record_index": 0,
                "logged_at": times[i],
                "model_name": champion["name"],
                "model_version": champion["version"],
                "features": record,
                "prediction": labels[i],
                "probabilities": (
                    dict(zip(classes, map(float, proba[i]))) if proba is not None else None
                ),
                "latency_ms": 1.0 + (first + i) % 7,
            }
            for i, record in enumerate(features.to_dict("records"))
        ]

    # The service's prediction-log writer; write() is the writer thread's insert.
    def writer(path, rollups=True):
        return PredictionLog(
            f"sqlite:///{path}",
            work / "spool",
            model_version=champion["version"],
            profile=champion["profile"] if rollups else None,
        )

    # CPU milliseconds per 100 records of one write() of a batch; the median of a list.
    def ms_per_100(log, batch):
        started = time.process_time()
        log.write(batch)
        return (time.process_time() - started) / len(batch) * 100 * 1000

    def median(values):
        return sorted(values)[len(values) // 2]

    if command == "append":
        begin, end, total = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        current = pd.read_parquet(work / "current.parquet").iloc[begin:end]
        log = writer(work / "monitoring.db")
        writing = predicting = 0.0
        chunk = 50_000
        for low in range(0, len(current), chunk):
            started = time.perf_counter()
            records = records_of(current.iloc[low : low + chunk], begin + low, total)
            predicting += time.perf_counter() - started
            started = time.perf_counter()
            for first in range(0, len(records), BATCH):  # the writer's batch size
                log.write(records[first : first + BATCH])
            writing += time.perf_counter() - started
        log.close()
        print(json.dumps({"rows": end - begin, "seconds": writing, "predict_seconds": predicting}))
    elif command == "key-cost":  # the same, into a copy of the full log: random vs ordered ids
        import shutil

        rows = int(sys.argv[3])
        current = pd.read_parquet(work / "current.parquet").iloc[:rows]
        spent = {}
        for kind in ("v4", "v7"):
            # Logged the day after the log's records, as live traffic would be.
            records = records_of(current, rows, rows, kind)
            copy = work / f"key-{kind}.db"
            shutil.copy(work / "monitoring.db", copy)
            log = writer(copy)
            batches = range(0, len(records), BATCH)
            spent[kind] = median([ms_per_100(log, records[i : i + BATCH]) for i in batches])
            log.close()
            copy.unlink()
        print(json.dumps({"batch": BATCH, "ms_per_100": spent}))
    else:  # CPU time of the writer's insert per 100 records, without and with rollups
        rows = int(sys.argv[3])
        current = pd.read_parquet(work / "current.parquet").iloc[:rows]
        records = records_of(current, 0, len(current))
        logs = {"plain": writer(work / "cost-plain.db", False), "rollups": writer(work / "cost.db")}
        spent = {name: [] for name in logs}
        for i, first in enumerate(range(0, len(records), BATCH)):
            name = ("plain", "rollups")[i % 2]
            spent[name].append(ms_per_100(logs[name], records[first : first + BATCH]))
        print(json.dumps({"batch": BATCH, "ms_per_100": {n: median(v) for n, v in spent.items()}}))

elif command == "monitor":
    started = time.perf_counter()
    import sqlalchemy as sa

    monitor = load("monitoring.monitor").monitor
    imported = time.perf_counter()
    champion = json.loads((work / "champion.json").read_text())
    engine = sa.create_engine(f"sqlite:///{work / 'monitoring.db'}")
    exact = len(sys.argv) > 3 and sys.argv[3] == "exact"
    report = monitor(engine, champion, START, END, THRESHOLDS, exact=exact)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "records": report["records"],
                "source": report["source"],
                "messages": report["messages"],
                "status": report["status"],
                "drifted": report.get("drifted"),
                "features": {n: f["verdict"] for n, f in report["features"].items()},
                "quantiles": {
                    n: f["summary"].get("quantiles") for n, f in report["features"].items()
                },
                "import_seconds": imported - started,
                "seconds": done - imported,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a baked repo with .venv (skips baking)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="records logged in all")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench-monitoring")
    parser.add_argument("--json", type=Path, help="also write all figures to this file")
    return parser.parse_args(argv)


def user_env() -> dict[str, str]:
    """The environment without this tool's own virtualenv, as a user's shell would have it."""
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != bin_dir)
    return env


def prepare(args: argparse.Namespace) -> Path:
    """The baked repo: --project as is, or a fresh bake of the defaults with `make setup`."""
    if args.project:
        return args.project.resolve()
    from cookiecutter.main import cookiecutter

    project_dir = args.out / "project"
    shutil.rmtree(project_dir, ignore_errors=True)
    project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(project_dir)))
    print(f"==> make setup  ({project})", flush=True)
    subprocess.run(["make", "setup"], cwd=project, env=user_env(), check=True, timeout=STEP_TIMEOUT)
    return project


def helper(project: Path, script: Path, work: Path, *args: object) -> dict:
    """Run one helper command in a fresh process of the baked repo's interpreter; its JSON."""
    package = next(p.name for p in (project / "src").iterdir() if (p / "monitoring").is_dir())
    env = {**user_env(), "BENCH_PACKAGE": package, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), str(script), *map(str, (work, *args))],
        cwd=project,
        env=env,
        check=False,
        timeout=STEP_TIMEOUT,
        capture_output=True,
        text=True,
    )
    return last_json(result, f"helper {args[0] if args else ''}")


def last_json(result: subprocess.CompletedProcess, what: str) -> dict:
    """The JSON on a finished process's last stdout line; its stderr when it failed."""
    lines = result.stdout.strip().splitlines()
    if result.returncode or not lines:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"{what} failed (exit {result.returncode})")
    return json.loads(lines[-1])


def evidently_venv(out: Path) -> Path:
    """A venv with evidently 0.7.23 and pandas 2 (it does not import with pandas 3), made once."""
    venv = out / "evidently-venv"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import evidently, pyarrow"]
    if python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return python
    uv = str(Path(sys.executable).parent / "uv")
    print(f"==> evidently venv  ({venv})", flush=True)
    subprocess.run([uv, "venv", "-q", str(venv)], check=True, timeout=600)
    packages = ["evidently==0.7.23", "pandas<3", "scipy", "pyarrow"]
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    subprocess.run([uv, "pip", "install", "-q", *packages], env=env, check=True, timeout=1800)
    return python


def steps(rows: int) -> list[int]:
    """Log sizes to measure at: 100k, 300k and the total (fewer when --rows is small)."""
    return sorted({n for n in (100_000, 300_000) if n < rows} | {rows})


def flat_table(runs: list[dict]) -> None:
    """Monitor time and peak RSS per log size, and the memory goal."""
    print("\n== monitor() over the whole log, fresh process per size (SQLite) ==")
    print(
        f"{'records':>10} {'source':>14} {'import s':>9} {'monitor s':>10} {'peak RSS MB':>12} "
        f"{'vs first':>9}"
    )
    base = runs[0]["peak_rss_mb"]
    for run in runs:
        print(
            f"{run['records']:>10,} {run['source']:>14} {run['import_seconds']:>9.2f} "
            f"{run['seconds']:>10.3f} {run['peak_rss_mb']:>12.1f} "
            f"{run['peak_rss_mb'] / base - 1:>+9.1%}"
        )
    if len(runs) == 1:
        print("memory flat: n/a (one log size; --rows above 100000 measures it at several)")
        return
    growth = runs[-1]["peak_rss_mb"] / base - 1
    verdict = "PASS" if growth <= 0.20 else "MISS"
    print(f"memory flat (peak RSS at largest within 20 % of smallest): {verdict} ({growth:+.1%})")


def reference(ours: dict, exact: dict) -> None:
    """The rollups against the raw rows (the exact path) on the largest log."""
    print("\n== monitor() from the rollups vs from the raw rows (exact=True), largest log ==")
    same = ours["features"] == exact["features"]
    print(f"identical verdicts, PSI, statistics and p-values: {_yes(same)}")
    print(f"{'feature':<16} {'p05':>17} {'p50':>17} {'p95':>17}   (rollups / raw)")
    for name, points in exact["quantiles"].items():
        if not points:
            continue
        mine = ours["quantiles"][name]
        cells = [f"{mine[p]:.2f}/{points[p]:.2f}" for p in ("p05", "p50", "p95")]
        print(f"{name:<16} " + " ".join(f"{c:>17}" for c in cells))
    print(f"time: rollups {ours['seconds']:.3f} s, raw rows {exact['seconds']:.2f} s")


def compare(ours: dict, theirs: dict) -> dict:
    """Per-feature verdicts side by side, identical verdicts on the shifted features, speed."""
    print("\n== drift verdicts: ours (SQL over the rollups) vs Evidently DataDriftPreset ==")
    header = f"{'feature':<16} {'ours':>6} {'PSI':>8} {'p':>10}   {'evidently':>9} {'stat':>22}"
    print(header)
    for name, verdict in ours["features"].items():
        other = theirs["columns"].get(name, {})
        stat = f"{other.get('method', '?')}={other.get('score', float('nan')):.4g}"
        print(
            f"{name:<16} {_yes(verdict['drifted']):>6} {verdict['psi']:>8.4f} "
            f"{verdict['p_value']:>10.3g}   {_yes(other.get('drifted')):>9} {stat:>22}"
        )
    same = all(
        ours["features"][n]["drifted"] == theirs["columns"].get(n, {}).get("drifted")
        for n in SHIFTED
    )
    others = [n for n in ours["features"] if n not in SHIFTED]
    same_clean = all(
        ours["features"][n]["drifted"] == theirs["columns"].get(n, {}).get("drifted")
        for n in others
    )
    print(f"identical verdicts on the shifted features {SHIFTED}: {_yes(same)}")
    print(f"identical verdicts on the unshifted features: {_yes(same_clean)}")
    ratio = theirs["seconds"] / ours["seconds"]
    print(
        f"\ntime on {ours['records']:,} records: ours monitor() {ours['seconds']:.3f} s "
        f"(+{ours['import_seconds']:.2f} s import) | Evidently {theirs['seconds']:.2f} s "
        f"(+{theirs['import_seconds']:.2f} s import, +{theirs['load_seconds']:.2f} s reading "
        "Parquet; not counted)"
    )
    print(f"speed ratio Evidently / ours: {ratio:.2f}x")
    print(f"goal: identical verdicts on shifted features: {'PASS' if same else 'MISS'}")
    print(f"goal: >= 10x faster than Evidently: {'PASS' if ratio >= 10 else 'MISS'} ({ratio:.2f}x)")
    return {"identical_shifted": same, "identical_unshifted": same_clean, "ratio": ratio}


def _yes(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    project = prepare(args)
    work = args.out / "data"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "monitoring_helper.py"
        script.write_text(HELPER)
        print(f"==> train champion, draw {args.rows:,} shifted records  ({project})", flush=True)
        print(json.dumps(helper(project, script, work, "prepare", args.rows)), flush=True)
        cost = helper(project, script, work, "writer-cost", min(args.rows, COST_ROWS))
        print(
            f"==> writer CPU per 100 records (median of {cost['batch']}-record batches): "
            f"{cost['ms_per_100']['plain']:.3f} ms without rollups, "
            f"{cost['ms_per_100']['rollups']:.3f} ms with",
            flush=True,
        )
        runs, logged, loading = [], 0, []
        for size in steps(args.rows):
            wrote = helper(project, script, work, "append", logged, size, args.rows)
            loading.append(wrote)
            logged = size
            print(
                f"==> logged {size:,} records through PredictionLog.write, {BATCH} a transaction "
                f"(+{wrote['seconds']:.1f} s writing, rollups included; "
                f"+{wrote['predict_seconds']:.1f} s predicting)",
                flush=True,
            )
            runs.append(helper(project, script, work, "monitor"))
            print(
                f"    monitor: {runs[-1]['seconds']:.3f} s from {runs[-1]['source']}, "
                f"{runs[-1]['peak_rss_mb']:.0f} MB",
                flush=True,
            )
        exact = helper(project, script, work, "monitor", "exact")
        print(
            f"    monitor(exact=True): {exact['seconds']:.2f} s from {exact['source']}, "
            f"{exact['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        keys = helper(project, script, work, "key-cost", min(args.rows, COST_ROWS))
        v4, v7 = keys["ms_per_100"]["v4"], keys["ms_per_100"]["v7"]
        print(
            f"==> writer CPU per 100 records into the {args.rows:,}-record log: {v4:.3f} ms with "
            f"random request ids (UUIDv4), {v7:.3f} ms with the service's time-ordered ones "
            f"(UUIDv7): {v4 / v7:.1f}x",
            flush=True,
        )
    python = evidently_venv(args.out)
    print("==> Evidently DataDriftPreset on the same reference and current rows", flush=True)
    result = subprocess.run(
        [
            str(python),
            str(BENCH / "evidently_drift.py"),
            str(work / "reference.parquet"),
            str(work / "current.parquet"),
        ],
        env={**user_env(), "OMP_NUM_THREADS": "1"},
        check=False,
        timeout=STEP_TIMEOUT,
        capture_output=True,
        text=True,
    )
    theirs = last_json(result, "evidently_drift.py")
    flat_table(runs)
    reference(runs[-1], exact)
    summary = compare(runs[-1], theirs)
    if args.json:
        figures = {"runs": runs, "exact": exact, "loading": loading, "writer_cost": cost}
        figures["request_id_cost"] = keys
        args.json.write_text(json.dumps({**figures, "evidently": theirs, **summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
