"""The promotion gate, and rollback that re-checks the old model on today's data."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import registry
from .config import Backends
from .errors import PipelineError
from .evaluation import OtherSchema, Unloadable, holdout, score_version
from .lineage import DEMOTED_AT, DEMOTED_REASON, repeated_training
from .metrics import Metric, difference, figure, get_metric, setting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gate:
    """The promotion rule: a threshold and a minimum improvement, in the metric's direction."""

    metric: Metric
    threshold: float
    min_improvement: float

    @classmethod
    def from_params(cls, promote: dict[str, Any], task: str) -> Gate:
        """Build the gate from the `promote:` section, refusing bad values."""
        try:
            threshold, margin = (
                float(promote["threshold"]),
                float(promote.get("min_improvement", 0)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise PipelineError(
                f"params.yaml promote.threshold and promote.min_improvement must be numbers: {err}"
            ) from err
        if margin < 0:
            raise PipelineError(f"params.yaml promote.min_improvement is {margin}: it must be >= 0")
        metric = get_metric(str(promote.get("metric")), task)
        problem = metric.outside(threshold)
        if problem:  # no model could ever pass, or every one would
            raise PipelineError(f"params.yaml promote.threshold: {problem}")
        return cls(metric, threshold, margin)

    def decide(
        self,
        candidate: float | None,
        champion: float | None,
        unscored: str | None = None,
        baseline: float | None = None,
    ) -> tuple[bool, str]:
        """Whether to promote, and why, in words a reviewer can check. `unscored` says why a
        champion has no value (it could not score the data); a candidate without one (the
        metric is undefined on the holdout) is not promoted, nor one that does not beat the
        `baseline`, a model that ignores the features (evaluation.baseline_metrics)."""
        name, direction = self.metric.name, ">=" if self.metric.higher_is_better else "<="
        if candidate is None:
            return False, (
                f"{name} is undefined on this holdout (see reports/evaluation.json): "
                "the gate cannot judge the candidate"
            )
        scored = f"{name} {figure(candidate)}"
        if not self.metric.passes(candidate, self.threshold):
            failed = f"{scored} fails the threshold ({direction} {setting(self.threshold)})"
            return False, failed + self._scale(candidate, baseline)
        if baseline is not None and self.metric.better_by(candidate, baseline) <= 0:
            return False, (
                f"{scored} does not beat {figure(baseline)}, the score of a model that "
                "ignores the features (the training rows' mean, median for mae, or class "
                "frequencies for every row): it learnt nothing worth deploying"
            )
        if champion is None:
            return (
                True,
                f"{scored} passes the threshold ({direction} {setting(self.threshold)}); "
                + (f"the {unscored}, so it is not compared" if unscored else "no champion yet"),
            )
        # Rounded: 0.3 - 0.2 is 0.09999999999999998 in floating point, no miss of a minimum 0.1.
        gain = round(self.metric.better_by(candidate, champion), 12)
        if gain < 0:
            return False, (
                f"{scored} is worse than champion {figure(champion)} "
                f"by {difference(-gain)} (minimum improvement {setting(self.min_improvement)})"
            )
        if gain < self.min_improvement:
            return False, (
                f"{scored} vs champion {figure(champion)}: improvement {difference(gain)} is "
                f"below the minimum {setting(self.min_improvement)}"
            )
        compared = f"ties champion {figure(champion)}"
        if gain:
            compared = f"beats champion {figure(champion)} by {difference(gain)}"
        return True, (
            f"{scored} passes the threshold and {compared} "
            f"(minimum improvement {setting(self.min_improvement)})"
        )

    def _scale(self, candidate: float, baseline: float | None) -> str:
        """What a model that ignores the features scores, said after a failed threshold: the
        scale of the target, and whether the candidate is even worse."""
        if baseline is None:
            return ""
        constant = f"a model that ignores the features scores {figure(baseline)}"
        if self.metric.better_by(candidate, baseline) < 0:
            return f"; {constant}, better than this candidate"
        return f"; for scale, {constant}"


def promote(evaluation: dict, gate: Gate, backends: Backends, reevaluate) -> dict[str, Any]:
    """Apply the gate to the evaluated candidate; move the alias only when it passes.

    `reevaluate()` is called when the champion moved since the evaluation was written, so the
    decision is always taken against the current champion.
    """
    client = registry.connect(backends)
    name, candidate = evaluation["model_name"], evaluation["candidate"]["version"]
    repair_interrupted(client, name)
    registered = registry.version(client, name, candidate, evaluation["candidate"].get("run_id"))
    current = registry.champion(client, name)
    # When the gate last decided on a version, whatever it decided: retrain_age.py's clock.
    decided_at = registry.now()
    if current and str(current.version) == candidate:
        reason = f"version {candidate} is already the champion"
        _tag(client, name, candidate, _last("unchanged", reason, decided_at))
        return _outcome("unchanged", reason, evaluation, gate)
    evaluated_against = (evaluation.get("champion") or {}).get("version")
    if (str(current.version) if current else None) != evaluated_against:
        log.info("champion moved since the evaluation: evaluating again")
        evaluation = reevaluate()
    repeat = repeated_training(client, name, registered, current)
    accepted, reason = (False, repeat) if repeat else decide(evaluation, gate)
    if not accepted:
        reason += _failing_champion(evaluation, gate)
    if accepted and registered.tags.get("git.dirty") == "true":
        reason += (
            f"; note: trained from uncommitted changes, so commit "
            f"{registered.tags.get('git.commit')} does not hold its code"
        )
    outcome = "promoted" if accepted else "rejected"
    # gate.decision is the one that let a version through, which a former champion keeps.
    last = _last(outcome, reason, decided_at) | _holdout_scores(evaluation)
    decision = {"gate.decision": outcome, "gate.reason": reason}
    if accepted:
        registry.move_champion(
            client,
            name,
            candidate,
            {
                **decision,
                **last,
                "promoted_at": decided_at,
                "promotion_reason": reason,
                "previous_champion": str(current.version) if current else "none",
            },
            judged=str(current.version) if current else None,
        )
    else:
        former = registered.tags.get("gate.decision") == "promoted"
        _tag(client, name, candidate, last if former else {**decision, **last})
    return _outcome("promoted" if accepted else "rejected", reason, evaluation, gate)


def _last(outcome: str, reason: str, decided_at: str) -> dict[str, str]:
    """The tags of the gate's last decision on a version, in promotion.json's words."""
    return {
        "gate.last_decision": outcome,
        "gate.last_reason": reason,
        "gate.decided_at": decided_at,
    }


def _holdout_scores(evaluation: dict) -> dict[str, str]:
    """The scores the gate decided on, as tags (reports/ is not kept): the holdout's rows and
    dates, each metric of the candidate and of the champion on those rows, and the delta's
    paired bootstrap interval."""
    holdout, champion = evaluation["holdout"], evaluation.get("champion") or {}
    tags = {"gate.holdout.rows": str(holdout["rows"])}
    if dates := (holdout.get("dates") or {}).get("holdout"):
        tags["gate.holdout.dates"] = " to ".join(dates)
    if champion.get("version"):
        tags["gate.holdout.champion_version"] = str(champion["version"])
    for metric, row in evaluation.get("comparison", {}).items():
        for side in ("candidate", "champion"):
            if row.get(side) is not None:
                tags[f"gate.holdout.{side}.{metric}"] = f"{row[side]:.6g}"
        if interval := row.get("delta_interval"):
            low, high = interval
            tags[f"gate.holdout.delta_interval.{metric}"] = f"{low:.6g} to {high:.6g}"
    return tags


def _tag(client, name: str, version: str, tags: dict[str, str]) -> None:
    """Set the version's tags."""
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def decide(evaluation: dict, gate: Gate) -> tuple[bool, str]:
    """The gate's decision on an evaluation report (evaluation.json)."""
    name, champion = gate.metric.name, evaluation.get("champion") or {}
    value = (champion.get("metrics") or {}).get(name)
    unscored = champion.get("unscored")
    if champion.get("unloadable"):  # only this code changed: a worse candidate would pass
        return False, (
            f"the {unscored}; the gate promotes no candidate it cannot compare with the "
            "champion it would replace"
        )
    if champion.get("metrics") and value is None:
        unscored = f"champion's {name} is undefined on this holdout"
    baseline = ((evaluation.get("baseline") or {}).get("metrics") or {}).get(name)
    return gate.decide(evaluation["candidate"]["metrics"].get(name), value, unscored, baseline)


def _failing_champion(evaluation: dict, gate: Gate) -> str:
    """A warning to add when the champion kept in service itself fails the threshold on this
    holdout, or an empty string."""
    champion = evaluation.get("champion") or {}
    value = (champion.get("metrics") or {}).get(gate.metric.name)
    if value is None or gate.metric.passes(value, gate.threshold):
        return ""
    return (
        f"; WARNING: champion v{champion['version']} itself scores {gate.metric.name} "
        f"{figure(value)} on this holdout, failing the threshold {setting(gate.threshold)}: look "
        "at the newest data, and consider `make rollback`"
    )


def _outcome(decision: str, reason: str, evaluation: dict, gate: Gate) -> dict[str, Any]:
    """The promotion report."""
    log.info("promotion decision: %s (%s)", decision, reason)
    return {
        "decision": decision,
        "reason": reason,
        "model_name": evaluation["model_name"],
        "candidate": evaluation["candidate"],
        "champion_before": evaluation["champion"],
        "gate": {
            **asdict(gate),
            "metric": gate.metric.name,
            "higher_is_better": gate.metric.higher_is_better,
        },
    }


# How long a move of the alias may take between its first tag and the alias: marks older than
# this that contradict the alias are an interrupted run's, not a run in progress.
MOVE_SECONDS = 60
PROMOTION_MARKS = (
    "gate.decision",
    "gate.reason",
    "gate.last_decision",
    "gate.last_reason",
    "promotion_reason",
    "previous_champion",
)


def repair_interrupted(client, name: str) -> None:
    """Undo the marks a promote or rollback killed in mid-move left (kill -9, a runner lost;
    Ctrl-C undoes its own): the alias is what holds. The champion carries no out-of-service
    marks, and a version never confirmed promoted (no promoted_at) that is not champion carries
    no promotion."""
    current = registry.champion(client, name)
    if current and DEMOTED_AT in current.tags and _stale(current.tags[DEMOTED_AT]):
        log.warning(
            "champion v%s is marked out of service by a rollback interrupted at %s: unmarked",
            current.version,
            current.tags[DEMOTED_AT],
        )
        _unmark(client, name, str(current.version), (DEMOTED_AT, DEMOTED_REASON))
    for version in client.search_model_versions(f"name='{name}'"):
        tags = version.tags
        if (
            version.version != (current and current.version)
            and tags.get("gate.decision") == "promoted"
            and "promoted_at" not in tags
            and _stale(tags.get("gate.decided_at"))
        ):
            log.warning(
                "v%s is marked promoted by a promotion interrupted before the alias moved (at "
                "%s): unmarked, the gate decides on it again",
                version.version,
                tags.get("gate.decided_at"),
            )
            _unmark(client, name, str(version.version), PROMOTION_MARKS)


def _stale(when: str | None) -> bool:
    """Whether the move that recorded this time is over: more than MOVE_SECONDS ago (or no
    time recorded)."""
    oldest = datetime.now(UTC) - timedelta(seconds=MOVE_SECONDS)
    return when is None or datetime.fromisoformat(when) < oldest


def _unmark(client, name: str, version: str, keys) -> None:
    """Delete these tags of a version, best effort (registry.quietly)."""
    for key in keys:
        registry.quietly(client.delete_model_version_tag, name, version, key)


def rollback_target(client, name: str, requested: str | None):
    """The version to roll back to: the one asked for, or the champion's predecessor (for a
    champion only a forced rollback made, never promoted, the version that rollback replaced)."""
    current = registry.champion(client, name)
    if current is None:
        raise PipelineError(f"model {name} has no champion: there is nothing to roll back")
    tags = current.tags
    number = requested or tags.get("previous_champion") or tags.get("rolled_back_from")
    if not number or number == "none":
        former = registry.former_champions(client, name, current.version)
        raise PipelineError(
            f"champion v{current.version} has no previous champion: pass VERSION=<n> "
            f"(former champions: {former})"
        )
    if str(number) == str(current.version):
        raise PipelineError(f"version {number} is already the champion")
    return current, registry.version(client, name, number)


def rollback(
    data_path,
    params: dict,
    gate: Gate,
    backends: Backends,
    requested: str | None,
    reason: str,
    force: bool,
) -> dict[str, Any]:
    """Re-score the target on today's holdout; refuse a version that fails the threshold, or that
    was never champion, unless forced."""
    client = registry.connect(backends)
    name = params["model"]["name"]
    repair_interrupted(client, name)
    current, target = rollback_target(client, name, requested)
    rows, schema = holdout(data_path, params)
    left_out: dict[str, int] = {}
    try:
        # Rows of a class newer than the target are left out, for the champion too.
        scored = score_version(name, str(target.version), rows, schema, leave_out_unknown=True)
        value, unusable, rows = scored["metrics"][gate.metric.name], None, scored["rows"]
        left_out = scored["left_out"]
    except Unloadable as err:
        value, unusable = None, str(err)
    except OtherSchema as err:  # it could not answer today's requests: FORCE cannot help
        commit = target.tags.get("git.commit", "<its git.commit tag>")
        value = None
        unusable = (
            f"{err}; it cannot serve today's data. To go back to it, restore the data section "
            f"of params.yaml it was trained with (`git checkout {commit} -- params.yaml`, and "
            f"the source it names), run `make data`, then roll back again; to serve it "
            f"meanwhile without moving the champion: `make serve VERSION={target.version}`"
        )
    passes = value is not None and gate.metric.passes(value, gate.threshold)
    refusal = unusable or _refusal(target, gate, value, passes)
    moves = not unusable and (force or not refusal)
    # The champion it replaces, on the same rows, when it is replaced: a rollback to a worse model
    # may be the intent (the champion misbehaves where the holdout cannot see), but it is said.
    before = _score_or_none(name, str(current.version), rows, schema, gate) if moves else None
    # None when there was nothing to compare (a refusal, an undefined metric), not "not worse".
    worse = None if None in (value, before) else gate.metric.better_by(value, before) < 0
    report = {
        "model_name": name,
        "from_version": str(current.version),
        "to_version": str(target.version),
        "metric": gate.metric.name,
        "value_today": value,
        "left_out": left_out,  # holdout rows per class the target was not trained on
        "champion_value_today": before,
        "worse_than_champion": worse,
        "threshold": gate.threshold,
        "passes_threshold": passes,
        "forced": force,
        "reason": reason,
        "refusal": refusal,
        "forceable": unusable is None,  # FORCE overrides the check, never an unusable version
        "moved": False,
    }
    if not moves:
        return report
    when = registry.now()
    with _demoting(client, name, current, target, {DEMOTED_AT: when, DEMOTED_REASON: reason}):
        registry.move_champion(
            client,
            name,
            str(target.version),
            {
                "rolled_back_at": when,
                "rollback_reason": reason,
                # Not previous_champion: that keeps what preceded the target when it was
                # promoted, so a second rollback goes further back instead of undoing the first.
                "rolled_back_from": str(current.version),
                f"rollback.{gate.metric.name}": "undefined" if value is None else f"{value:.6g}",
            },
            judged=str(current.version),
        )
    return {**report, "moved": True}


def _score_or_none(name: str, version: str, rows, schema, gate: Gate) -> float | None:
    """A version's gate metric on the holdout rows; None when it cannot score them."""
    try:
        return score_version(name, version, rows, schema)["metrics"][gate.metric.name]
    except (OtherSchema, Unloadable) as err:
        log.warning("the champion is not compared: %s", err)
        return None


def _refusal(target, gate: Gate, value: float | None, passes: bool) -> str | None:
    """Why the check refuses to roll back to `target` (FORCE=1 overrides it), or None."""
    if not ({"promoted_at", "rolled_back_at"} & set(target.tags)):
        # Rolling "back" to a version the gate never let through would bypass the gate.
        return (
            f"version {target.version} was never champion (gate: "
            f"{target.tags.get('gate.reason', 'not evaluated')}); a rollback restores a former one"
        )
    if value is None:
        return f"{gate.metric.name} is undefined on today's holdout: the check cannot pass"
    if not passes:
        return (
            f"version {target.version} scores {gate.metric.name}={figure(value)} on today's "
            f"holdout, failing the threshold {setting(gate.threshold)}"
        )
    return None


@contextmanager
def _demoting(client, name: str, left, target, tags: dict[str, str]):
    """Mark the version a rollback takes out of service before the alias moves, so the gate
    never promotes it (or its twin) again; undo that if the alias does not move. A target that
    was itself taken out of service before is in service again once the alias has moved."""
    for key, value in tags.items():
        client.set_model_version_tag(name, str(left.version), key, value)
    try:
        yield
    except registry.Unconfirmed:  # the alias moved: `left` is out of service all the same
        _back_in_service(client, name, target, tags)
        raise
    except BaseException:  # Ctrl-C too: a kill -9 leaves them to repair_interrupted
        _unmark(client, name, str(left.version), tags)
        raise
    _back_in_service(client, name, target, tags)


def _back_in_service(client, name: str, target, tags: dict[str, str]) -> None:
    """Drop the out-of-service marks a former rollback left on the version now champion."""
    _unmark(client, name, str(target.version), set(tags) & set(target.tags))
