"""Promote the evaluated candidate to champion if it passes the gate (exit 0 either way)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from {{ cookiecutter.__package_name }} import lineage
from {{ cookiecutter.__package_name }}.cli import read_json, run, write_json
from {{ cookiecutter.__package_name }}.config import Backends, load_params
from {{ cookiecutter.__package_name }}.errors import PipelineError
from {{ cookiecutter.__package_name }}.evaluation import evaluate
from {{ cookiecutter.__package_name }}.promotion import Gate, promote

log = logging.getLogger("promote")


def main(argv: list[str] | None = None) -> int:
    """Apply the gate of params.yaml promote: and write the decision to --report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/dataset.parquet"))
    parser.add_argument("--train-report", type=Path, default=Path("reports/train.json"))
    parser.add_argument("--evaluation", type=Path, default=Path("reports/evaluation.json"))
    parser.add_argument("--report", type=Path, default=Path("reports/promotion.json"))
    args = parser.parse_args(argv)

    def step() -> int:
        refuse_data_not_locked(args.data)
        evaluation = read_json(args.evaluation, "make evaluate")
        refuse_evaluation_of_other_data(evaluation, args.data, args.evaluation)
        refuse_evaluation_of_an_earlier_candidate(evaluation, args.train_report, args.evaluation)
        params, backends = load_params(), Backends.from_env()
        gate = Gate.from_params(params["promote"], params["model"]["task"])

        def reevaluate() -> dict:
            trained = read_json(args.train_report, "make train")
            return evaluate(args.data, trained, params, backends, args.evaluation.parent)

        report = promote(evaluation, gate, backends, reevaluate)
        write_json(args.report, report)
        if report["decision"] == "promoted":
            log.info(
                "a running service keeps its bundle until redeployed: restart `make serve` (or "
                "let the deploy workflow ship it) to serve version %s",
                report["candidate"]["version"],
            )
        return 0

    return run(step)


def refuse_data_not_locked(data: Path) -> None:
    """Refuse to judge a candidate on data other than dvc.lock names, as after a git pull that
    brought another data version: the gate would re-score it on out-of-date rows."""
    locked = lineage.locked_md5(data)
    if locked and data.is_file() and (held := lineage.file_md5(data)) != locked:
        raise PipelineError(
            f"{data} (md5 {held[:8]}) is not the data dvc.lock names (md5 {locked[:8]}), as "
            "after a git pull or checkout: run `make pipeline`, which brings the data and the "
            "candidate up to date before the gate"
        )


def refuse_evaluation_of_other_data(evaluation: dict, data: Path, path: Path) -> None:
    """Refuse to judge an evaluation made on data other than the file holds now, as after a
    `make train` interrupted once `make data` had brought new rows: its candidate and scores
    are the previous data's. The file's md5 is dvc.lock's where it names one (which
    refuse_data_not_locked has checked against the file), so the file is read once."""
    scored = evaluation.get("holdout", {}).get("data_md5")
    if not scored or not data.is_file():
        return
    held = lineage.locked_md5(data) or lineage.file_md5(data)
    if held != scored:
        raise PipelineError(
            f"{path} scored candidate v{evaluation['candidate']['version']} on other data (md5 "
            f"{scored[:8]}) than {data} holds (md5 {held[:8]}), as after an interrupted "
            "`make train`: run `make pipeline`, which trains and evaluates on this data first"
        )


def refuse_evaluation_of_an_earlier_candidate(evaluation: dict, train_report: Path, path: Path):
    """Refuse to judge an evaluation of another version than the last `make train` registered,
    as after `make train` without `make evaluate`: the gate would rule on the earlier one."""
    if not train_report.is_file():
        return
    trained = read_json(train_report, "make train")
    scored = str(evaluation["candidate"]["version"])
    if str(trained.get("version")) != scored:
        raise PipelineError(
            f"{path} scored candidate v{scored}, but {train_report} names v"
            f"{trained.get('version')}, the last `make train`'s: run `make evaluate` (or "
            "`make pipeline`) to score it before the gate"
        )


if __name__ == "__main__":
    raise SystemExit(main())
