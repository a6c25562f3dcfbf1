"""Exit codes and the one error type every step raises for an expected failure."""

EXIT_OK = 0
EXIT_ERROR = 1  # a failed step: the message names the cause and what to do
EXIT_USAGE = 2  # bad command-line arguments (argparse's own code)
EXIT_DRIFT = 3  # monitoring found drift: a normal outcome a workflow branches on
EXIT_REFUSED = 4  # a guarded action (rollback) refused because its check failed
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells report it
EXIT_TERMINATED = 143  # SIGTERM (a cancelled job, `docker stop`, `timeout`), as shells report it


class PipelineError(Exception):
    """An expected failure: bad input, bad configuration or an unreachable backend."""


class Terminated(BaseException):
    """SIGTERM arrived. Raised in the main thread like Ctrl-C's KeyboardInterrupt, so the step
    unwinds the same way: an MLflow run ends as failed, not left running; marks are undone."""


# Why a registered version may not load, and the fix; evaluation, rollback and serving say it.
RENAMED_CLASS = (
    "a model's classes are stored by their import path, so if a class of model.py was renamed or "
    "removed since, keep the old name importable there (OldName = NewName) to score or serve "
    "the versions that hold it"
)


def driver_said(err: BaseException) -> str:
    """The database driver's own error, type and first line, under SQLAlchemy's and pandas'
    wrappers (their text adds the statement and a link over several lines)."""
    while True:
        inner = getattr(err, "orig", None) or err.__cause__
        if inner is None or inner is err:
            break
        err = inner
    return first_line(err)


def first_line(err: BaseException) -> str:
    """The exception's class and the first line of its text."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"
