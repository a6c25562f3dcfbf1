"""Benchmark the generated repo's prediction service against `mlflow models serve` and a ceiling.

One run, one machine, one load generator (wrk), one model. It bakes the template with its defaults
(or reuses --project), runs `make setup pipeline bundle`, then serves the same registered version
four ways, one after the other, each with the same number of workers and OMP_NUM_THREADS=1:

  ours     scripts/serve.py, as deployed: with the prediction log on when the service has one
           (MONITORING_DATABASE_URL, default sqlite:///monitoring.db in the baked repo)
  nolog    the same with PREDICTION_LOG=0: what the prediction log costs
  mlflow   mlflow models serve -m models:/<name>/<version> --env-manager local
  ceiling  bench/ceiling.py: a bare FastAPI endpoint with the same request validation, no model

Each server gets a warm-up, then wrk at each concurrency for a fixed time, POSTing the same
one-record body (mlflow gets the equivalent dataframe_split body on /invocations). It prints
req/s, p50, p99 and the server's CPU time per request per server and concurrency, the ratios,
what the prediction log adds to the CPU per request, and whether the goals of issue #4 are met,
and issue #5's: the prediction log costs at most 5 % of the throughput. Figures only: the
exit status is 0 whenever the measurement ran, whatever the figures.

    .venv/bin/python bench/serving.py                     # bake into build/bench, then measure
    .venv/bin/python bench/serving.py --project build/bench/churn-model --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_name("post.lua")
HOST = "127.0.0.1"
MAKE_TIMEOUT = 1800
DEFAULT_LOG_URL = "sqlite:///monitoring.db"
VERSIONS = ("mlflow", "fastapi", "pydantic", "uvicorn", "uvloop", "scikit-learn", "pandas")
SERVERS = ("ours", "nolog", "mlflow", "ceiling")


@dataclass
class Target:
    """One server to measure: how to start it, what to POST where, when it is ready."""

    name: str
    argv: list[str]
    post_path: str
    ready_path: str
    body: bytes
    env: dict[str, str] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, help="a baked repo with a bundle: skip baking")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "build" / "bench",
        help="where to bake (replaced; default build/bench)",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes per server")
    parser.add_argument("--duration", type=int, default=10, help="seconds per concurrency")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server")
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (<= connections)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="any of " + ",".join(SERVERS))
    parser.add_argument("--start-timeout", type=int, default=180, help="seconds to become ready")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the servers in turn; report medians"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.servers = [s.strip() for s in args.servers.split(",")]
    if unknown := set(args.servers) - set(SERVERS):
        parser.error(f"unknown servers {sorted(unknown)}: choose from {', '.join(SERVERS)}")
    if min(args.concurrency) < 1 or min(args.workers, args.duration, args.rounds) < 1:
        parser.error("--concurrency, --workers, --duration and --rounds must be positive")
    return args


def user_env() -> dict[str, str]:
    """The environment without this tool's own virtualenv, as a user's shell would have it."""
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != bin_dir)
    return env


def ensure_wrk() -> None:
    """Install Debian's wrk when missing and running as root; otherwise say how."""
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        raise SystemExit("wrk is not installed: run `sudo apt-get install -y wrk`, then retry")
    print("==> apt-get install -y wrk", flush=True)
    if subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, timeout=600).returncode:
        subprocess.run(["apt-get", "update"], check=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, timeout=600)


def make(project: Path, target: str) -> None:
    """Run one make target in the baked repo, as a user would."""
    print(f"==> make {target}  ({project})", flush=True)
    subprocess.run(["make", target], cwd=project, env=user_env(), check=True, timeout=MAKE_TIMEOUT)


def prepare(args: argparse.Namespace) -> Path:
    """The baked repo with a bundle: --project as is, or a fresh bake of the defaults."""
    if args.project:
        project = args.project.resolve()
    else:
        from cookiecutter.main import cookiecutter

        shutil.rmtree(args.out, ignore_errors=True)
        project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(args.out)))
        for target in ("setup", "pipeline"):
            make(project, target)
    if not (project / "build" / "model" / "bundle.json").is_file():
        make(project, "bundle")
    return project


def prediction_log(project: Path) -> str | None:
    """The prediction-log URL ours runs with, or None when the service has no prediction log."""
    serving = list((project / "src").glob("*/serving/**/*.py"))
    markers = ("monitoring_database_url", "prediction_log", "predictionlog", "..monitoring")
    if not any(m in p.read_text().lower() for p in serving for m in markers):
        return None
    return os.environ.get("MONITORING_DATABASE_URL") or DEFAULT_LOG_URL


def log_rows(project: Path, url: str | None) -> int | None:
    """Rows in every table of a SQLite prediction log (None when not SQLite)."""
    if not url or not url.startswith("sqlite:///"):
        return None
    path = project / url.removeprefix("sqlite:///")
    if not path.is_file():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return sum(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)


def targets(project: Path, meta: dict, workers: int, log_url: str | None) -> dict[str, Target]:
    """The servers of the same model version."""
    venv = project / ".venv" / "bin"
    env = {**user_env(), "OMP_NUM_THREADS": "1"}
    env["PATH"] = f"{venv}{os.pathsep}{env['PATH']}"
    row, columns = meta["example"], list(meta["features"])
    ours_body = json.dumps({"records": [row]}).encode()
    split = {"columns": columns, "data": [[row[c] for c in columns]]}
    listen = ["--host", HOST, "--port", "{port}", "--workers", str(workers)]
    model_uri = f"models:/{meta['model_name']}/{meta['version']}"
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    ours = [str(venv / "python"), "scripts/serve.py", *listen]
    mlflow = [str(venv / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"]
    mlflow += ["-w", str(workers), "-h", HOST, "-p", "{port}"]
    ceiling = [str(venv / "python"), "bench/ceiling.py", *listen]
    ours_env = {**env, "MONITORING_DATABASE_URL": log_url} if log_url else env
    mlflow_body = json.dumps({"dataframe_split": split}).encode()
    return {
        "ours": Target("ours", ours, "/predict", "/ready", ours_body, ours_env),
        "nolog": Target(
            "nolog", ours, "/predict", "/ready", ours_body, {**ours_env, "PREDICTION_LOG": "0"}
        ),
        "mlflow": Target(
            "mlflow",
            mlflow,
            "/invocations",
            "/ping",
            mlflow_body,
            {**env, "MLFLOW_TRACKING_URI": tracking},
        ),
        "ceiling": Target("ceiling", ceiling, "/predict", "/ready", ours_body, env),
    }


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after 40 s."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with suppress(ProcessLookupError):  # workers that outlived their supervisor
        os.killpg(proc.pid, signal.SIGKILL)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float) -> None:
    """Poll `url` until it answers 200; fail if the server exits or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        with suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def group_cpu_seconds(pgid: int) -> float:
    """CPU time used so far by the live processes of a process group (from /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_settled(pgid: int, timeout: float) -> None:
    """Wait until the server's processes are idle: every worker, not just the first, loaded."""
    deadline = time.monotonic() + timeout
    before = group_cpu_seconds(pgid)
    while time.monotonic() < deadline:
        time.sleep(1)
        after = group_cpu_seconds(pgid)
        if after - before < 0.05:
            return
        before = after
    raise RuntimeError(f"the server's processes were still busy after {timeout} s")


def check_answer(url: str, body: bytes) -> str:
    """POST the body once; the answer, which must be a 200."""
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.read().decode()[:160]
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"POST {url} answered {err.code}: {err.read()[:300]!r}") from err


def run_wrk(url: str, body_file: Path, connections: int, seconds: int, threads: int) -> dict:
    """One wrk run at `connections` concurrency: req/s and latency percentiles in ms."""
    argv = [
        "wrk",
        "-t",
        str(min(threads, connections)),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        url,
    ]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
        env={**os.environ, "BENCH_BODY_FILE": str(body_file)},
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")]
    if done.returncode or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    raw = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    errors = {k: v for k, v in raw["errors"].items() if v}
    return {
        "concurrency": connections,
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1e3,
        "p90_ms": raw["p90_us"] / 1e3,
        "p99_ms": raw["p99_us"] / 1e3,
        "max_ms": raw["max_us"] / 1e3,
        "requests": raw["requests"],
        "errors": errors,
    }


def measure(target: Target, project: Path, args: argparse.Namespace) -> dict:
    """Start the server, check one answer, warm it up, run wrk at each concurrency, stop it."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    argv = [a.replace("{port}", str(port)) for a in target.argv]
    logs = project / "build" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    body_file = logs / f"{target.name}-body.json"
    body_file.write_bytes(target.body)
    log_file = logs / f"{target.name}.log"
    print(f"\n==> {target.name}: {' '.join(argv)}\n    log: {log_file}", flush=True)
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=project,
            env=target.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        started = time.monotonic()
        wait_ready(proc, base + target.ready_path, args.start_timeout)
        wait_settled(proc.pid, args.start_timeout)
        print(
            f"    ready, all workers idle after {time.monotonic() - started:.1f} s; one answer: "
            f"{check_answer(base + target.post_path, target.body)}",
            flush=True,
        )
        if args.warmup:
            run_wrk(base + target.post_path, body_file, 8, args.warmup, args.wrk_threads)
        runs, load = [], os.getloadavg()[0]
        for connections in args.concurrency:
            cpu = group_cpu_seconds(proc.pid)
            run = run_wrk(
                base + target.post_path, body_file, connections, args.duration, args.wrk_threads
            )
            cpu = group_cpu_seconds(proc.pid) - cpu
            run["cpu_us"] = cpu / run["requests"] * 1e6 if run["requests"] else None
            print(
                f"    c{connections:<3} {run['rps']:8.0f} req/s  p50 {run['p50_ms']:7.2f} ms"
                f"  p99 {run['p99_ms']:7.2f} ms  CPU {fmt(run['cpu_us'], '.0f', ' us')}/request"
                f"  {run['errors'] or ''}",
                flush=True,
            )
            runs.append(run)
        return {"command": argv, "load_average_1m_before": load, "runs": runs}
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        tail = log_file.read_text(errors="replace").splitlines()[-25:]
        print(f"    FAILED: {err}\n    last lines of {log_file}:", *tail, sep="\n      ")
        return {"command": argv, "error": str(err), "runs": []}
    finally:
        stop(proc)


def median_of(rounds: list[dict]) -> dict:
    """Per server and concurrency, the median req/s, p50 and p99 over the rounds that ran."""
    merged = {}
    for name in rounds[0]:
        measured = [r[name] for r in rounds if not r[name].get("error")]
        if not measured:
            merged[name] = rounds[-1][name]
            continue
        runs = []
        for i, first in enumerate(measured[0]["runs"]):
            same = [m["runs"][i] for m in measured]
            run = {k: statistics.median(r[k] for r in same) for k in ("rps", "p50_ms", "p99_ms")}
            cpu = [r["cpu_us"] for r in same if r.get("cpu_us") is not None]
            run["cpu_us"] = statistics.median(cpu) if cpu else None
            errors = [r["errors"] for r in same if r["errors"]]
            runs.append({**first, **run, "errors": errors[0] if errors else {}})
        merged[name] = {"rounds": len(measured), "runs": runs}
    return merged


def by_concurrency(results: dict, name: str) -> dict[int, dict]:
    """A server's runs keyed by concurrency ({} when it failed or was not run)."""
    return {r["concurrency"]: r for r in results.get(name, {}).get("runs", [])}


def ratio(results: dict, num: str, den: str, c: int, key: str = "rps") -> float | None:
    """num's figure over den's at concurrency c, when both were measured."""
    a, b = by_concurrency(results, num).get(c), by_concurrency(results, den).get(c)
    return a[key] / b[key] if a and b and b[key] else None


GOALS = (  # issue #4, stated for 2 cores: (text, numerator, denominator or None, key, limit)
    ("ours >= 8x the req/s of mlflow models serve at c64", "ours", "mlflow", 64, "rps", 8.0),
    ("ours p99 <= 10 ms at c8", "ours", None, 8, "p99_ms", 10.0),
    ("ours >= 50 % of the ceiling's req/s at c64", "ours", "ceiling", 64, "rps", 0.5),
    # issue #5: logging costs at most 5 % of the throughput
    ("ours (logging) >= 95 % of nolog's req/s at c64", "ours", "nolog", 64, "rps", 0.95),
)


def goals(results: dict) -> list[dict]:
    """The issue's goals, measured: PASS, MISS or n/a (not measured)."""
    out = []
    for text, num, den, c, key, limit in GOALS:
        if den:
            value = ratio(results, num, den, c, key)
            met = None if value is None else value >= limit
        else:
            run = by_concurrency(results, num).get(c)
            value = run[key] if run else None
            met = None if value is None else value <= limit
        status = "n/a" if met is None else ("PASS" if met else "MISS")
        out.append({"goal": text, "value": value, "limit": limit, "status": status})
    return out


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    """A number with its unit, or n/a."""
    return "n/a" if value is None else format(value, spec) + unit


def report(results: dict, concurrency: list[int], goal_list: list[dict]) -> None:
    """The table, the ratios and the goals."""
    heads = f"{'server':<8} {'conc':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU us':>7}"
    print(f"\n{heads}  errors")
    for name, result in results.items():
        if "error" in result:
            print(f"{name:<8} FAILED: {result['error']}")
        for run in result["runs"]:
            print(
                f"{name:<8} {run['concurrency']:>5} {run['rps']:>8.0f} {run['p50_ms']:>8.2f} "
                f"{run['p99_ms']:>8.2f} {fmt(run.get('cpu_us'), '.0f'):>7}  {run['errors'] or '-'}"
            )
    print("(CPU us: the server's processes' CPU time per request, user and system, from /proc)")
    heads = ("ours/mlflow req/s", "ours/mlflow p99", "ours/ceiling req/s", "ours/nolog req/s")
    print(f"\n{'conc':>5} {heads[0]:>18} {heads[1]:>16} {heads[2]:>19} {heads[3]:>17}")
    for c in concurrency:
        speedup = fmt(ratio(results, "ours", "mlflow", c), ".1f", "x")
        p99 = fmt(ratio(results, "ours", "mlflow", c, "p99_ms"), ".2f", "x")
        share = ratio(results, "ours", "ceiling", c)
        logged = ratio(results, "ours", "nolog", c)
        print(
            f"{c:>5} {speedup:>18} {p99:>16} {fmt(share and share * 100, '.0f', ' %'):>19} "
            f"{fmt(logged and logged * 100, '.0f', ' %'):>17}"
        )
    report_logging_cpu(results, concurrency)
    print(
        f"\nGoals (issues #4 and #5, stated for 2 cores; this machine has {os.cpu_count()} CPUs):"
    )
    for goal in goal_list:
        print(f"  {goal['status']:<4}  {goal['goal']}: measured {fmt(goal['value'], '.2f')}")
    if any(run["errors"] for r in results.values() for run in r["runs"]):
        print("  NOTE: some runs had errors (non-2xx answers or socket errors): see the table")


def report_logging_cpu(results: dict, concurrency: list[int]) -> None:
    """What the prediction log adds to the server's CPU per request (ours against nolog)."""
    for c in concurrency:
        ours = by_concurrency(results, "ours").get(c, {}).get("cpu_us")
        nolog = by_concurrency(results, "nolog").get(c, {}).get("cpu_us")
        if ours and nolog:
            more = "more" if ours >= nolog else "less (within the noise)"
            print(
                f"c{c}: logging takes {abs(ours - nolog):.0f} us {more} of the server's CPU per"
                f" request ({abs(ours - nolog) / nolog * 100:.0f} % of nolog's {nolog:.0f} us)"
            )


def environment(project: Path, args: argparse.Namespace) -> dict:
    """Machine, package versions and settings, printed and kept in the JSON."""
    code = (
        "import importlib.metadata as m, json; "
        f"print(json.dumps({{p: m.version(p) for p in {list(VERSIONS)!r}}}))"
    )
    found = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "versions": json.loads(found.stdout) if found.returncode == 0 else found.stderr[-300:],
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0],
        "settings": {
            "workers": args.workers,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "wrk_threads": args.wrk_threads,
            "OMP_NUM_THREADS": "1",
        },
    }


def _cpu_model() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    """Prepare the repo, measure each server, report."""
    args = parse_args(argv)
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so every server is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    ensure_wrk()
    project = prepare(args)
    meta = json.loads((project / "build" / "model" / "bundle.json").read_text())
    log_url = prediction_log(project)
    info = environment(project, args)
    info["model"] = {k: meta[k] for k in ("model_name", "version", "task")}
    print(json.dumps(info, indent=1))
    print(f"prediction log for ours: {log_url or 'none (the service has no prediction log)'}")
    rows_before = log_rows(project, log_url)
    servers = targets(project, meta, args.workers, log_url)
    rounds = []
    for number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"\n=== round {number} of {args.rounds}", flush=True)
        rounds.append({name: measure(servers[name], project, args) for name in args.servers})
    results = median_of(rounds)
    rows_after = log_rows(project, log_url)
    info["prediction_log"] = {"url": log_url, "rows_before": rows_before, "rows_after": rows_after}
    goal_list = goals(results)
    if args.rounds > 1:
        print(f"\nMedians of {args.rounds} rounds:")
    report(results, args.concurrency, goal_list)
    written = None if rows_after is None else rows_after - (rows_before or 0)
    print(
        f"\nprediction log in effect for ours: {log_url or 'none'}"
        + (f" ({written} rows written during the run)" if written is not None else "")
    )
    print(f"re-run without baking: {sys.executable} bench/serving.py --project {project}")
    if args.json:
        document = {**info, "results": results, "goals": goal_list, "rounds": rounds}
        args.json.write_text(json.dumps(document, indent=1))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
