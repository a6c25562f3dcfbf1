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

Figures only: it prints PASS/MISS for the goals and never fails on them.

    .venv/bin/python bench/monitoring.py                          # bake, then measure 1M rows
    .venv/bin/python bench/monitoring.py --project build/bench/churn-model --rows 300000
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
SHIFTED = ("monthly_charges", "contract")

# Runs inside the baked repo's venv; argv: work dir, command, [arguments].
HELPER = r"""
import json, os, resource, sys, time, uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

work, command = Path(sys.argv[1]), sys.argv[2]
END = datetime(2026, 7, 1, tzinfo=UTC)
START = END - timedelta(days=1)
THRESHOLDS = {"psi": 0.2, "alpha": 0.01, "min_records": 200}
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
    model, x_train, metrics = training.fit(frame, schema, params)
    record = training.run_record(model, x_train, metrics, frame, schema, params, "md5")
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

elif command == "append":
    import sqlite3

    import joblib
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    training, tables = load("training"), load("monitoring.tables")
    begin, end, total = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    champion = json.loads((work / "champion.json").read_text())
    model = joblib.load(work / "model.joblib")
    db = work / "monitoring.db"
    tables.metadata.create_all(sa.create_engine(f"sqlite:///{db}"))
    names = champion["features"]
    current = pd.read_parquet(work / "current.parquet").iloc[begin:end]
    started = time.perf_counter()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    insert = (
        "INSERT INTO prediction_log (request_id, record_index, logged_at, model_name,"
        " model_version, features, prediction, prediction_value, probabilities, latency_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    step = timedelta(days=1) / total
    chunk = 50_000
    for low in range(0, len(current), chunk):
        part = current.iloc[low : low + chunk]
        features = part[names].astype(object).where(part[names].notna(), None)
        prediction, proba = training.predict(model, features, champion["task"])
        classes = [str(c) for c in champion["classes"] or []]
        rows = []
        for i, record in enumerate(features.to_dict("records")):
            index = begin + low + i
            stamp = (START + step * index).replace(tzinfo=None)
            probabilities = (
                json.dumps(dict(zip(classes, map(float, proba[i]))))
                if proba is not None
                else None
            )
            value = prediction[i]
            rows.append(
                (
                    uuid.uuid4().hex,
                    0,
                    stamp.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    champion["name"],
                    champion["version"],
                    json.dumps(record),
                    str(value),
                    float(value),
                    probabilities,
                    1.0 + index % 7,
                )
            )
        with conn:
            conn.executemany(insert, rows)
    conn.close()
    print(json.dumps({"rows": end - begin, "seconds": time.perf_counter() - started}))

elif command == "monitor":
    started = time.perf_counter()
    import sqlalchemy as sa

    monitor = load("monitoring.monitor").monitor
    imported = time.perf_counter()
    champion = json.loads((work / "champion.json").read_text())
    engine = sa.create_engine(f"sqlite:///{work / 'monitoring.db'}")
    report = monitor(engine, champion, START, END, THRESHOLDS)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "records": report["records"],
                "status": report["status"],
                "drifted": report.get("drifted"),
                "features": {n: f["verdict"] for n, f in report["features"].items()},
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
    print(f"{'records':>10} {'import s':>9} {'monitor s':>10} {'peak RSS MB':>12} {'vs first':>9}")
    base = runs[0]["peak_rss_mb"]
    for run in runs:
        print(
            f"{run['records']:>10,} {run['import_seconds']:>9.2f} {run['seconds']:>10.2f} "
            f"{run['peak_rss_mb']:>12.1f} {run['peak_rss_mb'] / base - 1:>+9.1%}"
        )
    growth = runs[-1]["peak_rss_mb"] / base - 1
    verdict = "PASS" if growth <= 0.20 else "MISS"
    print(f"memory flat (peak RSS at largest within 20 % of smallest): {verdict} ({growth:+.1%})")


def compare(ours: dict, theirs: dict) -> dict:
    """Per-feature verdicts side by side, identical verdicts on the shifted features, speed."""
    print("\n== drift verdicts: ours (SQL over the log) vs Evidently DataDriftPreset ==")
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
        f"\ntime on {ours['records']:,} records: ours monitor() {ours['seconds']:.2f} s "
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
        runs, logged = [], 0
        for size in steps(args.rows):
            wrote = helper(project, script, work, "append", logged, size, args.rows)
            logged = size
            print(f"==> logged {size:,} records (+{wrote['seconds']:.1f} s insert)", flush=True)
            runs.append(helper(project, script, work, "monitor"))
            print(
                f"    monitor: {runs[-1]['seconds']:.2f} s, {runs[-1]['peak_rss_mb']:.0f} MB",
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
    summary = compare(runs[-1], theirs)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "evidently": theirs, **summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
