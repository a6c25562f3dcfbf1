"""Refuse answers that would bake a broken project, naming every problem at once."""

import json
import keyword
import re
import sys
import tomllib
from pathlib import Path

# The only template substitution in this file. It is parsed inside main(), so the
# unrendered file still imports for tests.
ANSWERS_JSON = r"""{{ cookiecutter | jsonify }}"""

# The sample data's columns (src/<package>/sample.py; tests/test_hooks.py keeps them equal).
SAMPLE_FEATURES = ("tenure_months", "monthly_charges", "support_calls", "age")
SAMPLE_FEATURES += ("contract", "payment_method", "region")
SAMPLE_TIME_COLUMN = "event_date"

# The choice lists of cookiecutter.json (tests/test_hooks.py keeps the two equal):
# --replay and extra_context can still hand the hook any value.
CHOICES = {
    "python_version": ("3.11", "3.12", "3.13"),
    "task": ("classification", "regression"),
    "data_remote": ("local", "s3"),
}
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN")
MONTHS += ("JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
CRON_FIELDS = (  # name, lowest, highest, names standing for lowest, lowest + 1, ...
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day-of-week", 0, 7, WEEKDAYS),
)
DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February in a leap year
SLUG = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
# Plain decimals only: params.yaml receives the value verbatim, and YAML would read
# '1e-3' as a string and '010' as octal.
DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
IP_ADDRESS = re.compile(r"[0-9]+(\.[0-9]+){3}")
# Parts of S3 key-safe characters between single slashes: DVC's config reads '#' as a comment.
PREFIX = re.compile(r"([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?")
MAX_SLUG = 100  # GitHub's longest repository name
IMAGE_HOST = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
IMAGE_PATH = r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+"
PATTERN_RULES = {  # answer: (pattern, rule stated when it does not match)
    "target_column": (
        re.compile(r"[A-Za-z_][A-Za-z0-9_]*"),
        "use letters, digits and underscores, not starting with a digit (it names the sample "
        "data's target; for your own data, data.target in params.yaml takes any column name)",
    ),
    "image_name": (
        re.compile(IMAGE_HOST + r"(?::[0-9]+)?" + IMAGE_PATH),
        "give a lowercase registry/owner/name without tag, like ghcr.io/team/model",
    ),
    "github_owner": (
        re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}"),
        "a GitHub login has 1-39 letters, digits and single inner hyphens",
    ),
    "author_email": (
        re.compile(r"[^@\s]+@[^@\s]+"),
        "give one '@' with text on both sides and no spaces",
    ),
}


def text(answers: dict, key: str) -> str:
    """Return an answer as a string, whatever type extra_context gave it."""
    return str(answers.get(key, ""))


def normalized(name: str) -> str:
    """A distribution name as package installers compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_packages(answers: dict) -> set[str]:
    """The normalized names of the packages the generated project's uv.lock pins, read from the
    template (empty when cookiecutter does not say where it is)."""
    repo = text(answers, "_repo_dir")
    locks = sorted(Path(repo).glob("*__project_slug*/uv.lock")) if repo else []
    if not locks:
        return set()
    packages = tomllib.loads(locks[0].read_text()).get("package", [])
    return {normalized(p["name"]) for p in packages if "cookiecutter" not in p["name"]}


def check_project_name(answers: dict) -> list[str]:
    """Check that project_name yields a usable slug and package name."""
    name, slug = answers["project_name"], text(answers, "__project_slug")
    package = text(answers, "__package_name")
    if not re.search(r"[^\W_]", name):
        return [f"project_name={name!r} has no letter or digit to name the repository after"]
    if len(slug) > MAX_SLUG:
        return [
            f"project_name={name!r} gives a slug of {len(slug)} characters: GitHub repository "
            f"names hold at most {MAX_SLUG}"
        ]
    if not SLUG.fullmatch(slug):
        message = (
            f"project_name={name!r} gives the slug {slug!r}: the slug must start "
            "with a letter and hold only lowercase letters, digits and single hyphens"
        )
        return [message]
    if keyword.iskeyword(package) or package in sys.stdlib_module_names:
        message = (
            f"project_name={name!r} gives the package {package!r}, a Python keyword "
            "or standard-library module: choose another name"
        )
        return [message]
    if normalized(slug) in locked_packages(answers):
        return [
            f"project_name={name!r} gives the project {slug!r}, the name of one of its own "
            "dependencies (uv.lock), which uv cannot install beside it: choose another name"
        ]
    return []


def check_target_column(answers: dict) -> list[str]:
    """Check that the target is not a column the baked params.yaml declares for another use."""
    target = text(answers, "target_column")
    if target in SAMPLE_FEATURES or target == SAMPLE_TIME_COLUMN:
        use = "a feature" if target in SAMPLE_FEATURES else "the time column"
        return [
            f"target_column={target!r} is {use} of the built-in sample data, which params.yaml "
            "starts with: choose another name (your own data's columns are set in params.yaml)"
        ]
    return []


def check_choices(answers: dict) -> list[str]:
    """Check the answers that must be one of a fixed list."""
    return [
        f"{key}={answers[key]!r} is not supported: choose one of {', '.join(options)}"
        for key, options in CHOICES.items()
        if answers[key] not in options
    ]


def check_one_line(answers: dict) -> list[str]:
    """Check that the free-text answers are present and fit on one line."""
    return [
        f"{key}={answers[key]!r} is empty or spans lines: give one non-empty line"
        for key in ("description", "author_name")
        if not text(answers, key).strip() or "\n" in text(answers, key)
    ]


def follows_a_refused_answer(answers: dict, key: str) -> bool:
    """Whether an answer is still the default derived from project_name and github_owner while
    one of those is refused: its own message would name a value the user never gave."""
    if key != "image_name":
        return False
    owner = text(answers, "github_owner")
    slug = text(answers, "__project_slug")  # '_' stands for a name that slugifies to nothing
    derived = f"ghcr.io/{owner.lower()}/{'' if slug == '_' else slug}"
    owner_refused = not PATTERN_RULES["github_owner"][0].fullmatch(owner)
    return text(answers, key) == derived and bool(owner_refused or check_project_name(answers))


def check_patterns(answers: dict) -> list[str]:
    """Check the answers that must match a pattern, stating the rule of each miss."""
    return [
        f"{key}={answers[key]!r} is not valid: {rule}"
        for key, (pattern, rule) in PATTERN_RULES.items()
        if not pattern.fullmatch(text(answers, key)) and not follows_a_refused_answer(answers, key)
    ]


def check_metric(answers: dict) -> list[str]:
    """Check that primary_metric is a metric of the chosen task."""
    metric, task = answers["primary_metric"], answers["task"]
    metrics = answers["_metrics"]
    fitting = [name for name, spec in metrics.items() if spec["task"] == task]
    if not fitting or metric in fitting:
        return []  # an unknown task is reported by check_choices
    message = (
        f"primary_metric={metric!r} does not fit task={task!r}: choose one of {', '.join(fitting)}"
    )
    return [message]


def describe_range(low: float | None, high: float | None) -> str:
    """Describe a closed interval whose missing (None) ends are unbounded."""
    if low is None:
        return f"at most {high}"
    if high is None:
        return f"at least {low}"
    return f"between {low} and {high}"


def check_threshold(answers: dict) -> list[str]:
    """Check that promotion_threshold is a number the primary metric can reach."""
    value, given = answers["promotion_threshold"], text(answers, "promotion_threshold")
    metric = answers["primary_metric"]
    spec = answers["_metrics"].get(metric)
    if spec is None and not given:
        return []  # the default of an unknown metric: check_metric reports the metric
    if not DECIMAL.fullmatch(given):
        message = (
            f"promotion_threshold={value!r} is not a number: give a plain decimal such as 0.75"
        )
        return [message]
    if spec is None:
        return []  # an unknown metric is reported by check_metric
    low, high = spec["min"], spec["max"]
    if (low is None or float(given) >= low) and (high is None or float(given) <= high):
        return []
    message = (
        f"promotion_threshold={value!r} is outside the range of {metric}: "
        f"use a value {describe_range(low, high)}"
    )
    return [message]


def check_min_improvement(answers: dict) -> list[str]:
    """Check that min_improvement is a non-negative number."""
    value, given = answers["min_improvement"], text(answers, "min_improvement")
    if DECIMAL.fullmatch(given) and float(given) >= 0:
        return []
    message = (
        f"min_improvement={value!r} is not valid: give a plain decimal of 0 or more, such as 0.01"
    )
    return [message]


def cron_value(token: str, low: int, high: int, names: tuple) -> int | None:
    """Return the number a cron value stands for, or None when it does not fit."""
    if token.upper() in names:
        return names.index(token.upper()) + low
    if token.isdigit() and low <= int(token) <= high:
        return int(token)
    return None


def cron_part_problem(part: str, low: int, high: int, names: tuple) -> str | None:
    """Explain what is wrong with one comma-separated part of a cron field."""
    span, slash, step = part.partition("/")
    if slash and not (step.isdigit() and 1 <= int(step) <= high):
        return f"step '{step}' in '{part}' must be a whole number from 1 to {high}"
    if span == "*":
        return None
    if slash and "-" not in span:
        return f"'{part}' steps from a single value: use '*/{step}' or 'a-b/{step}'"
    ends = span.split("-", 1)
    values = [cron_value(end, low, high, names) for end in ends]
    allowed = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
    for end, value in zip(ends, values, strict=True):
        if value is None:
            return f"'{end}' is outside {allowed}" if end else f"'{part}' is missing a number"
    if values[0] > values[-1]:
        return f"range '{span}' runs backwards"
    return None


def cron_field_problem(field: str, low: int, high: int, names: tuple) -> str | None:
    """Explain the first problem in one cron field, or return None when it is valid."""
    found = (cron_part_problem(part, low, high, names) for part in field.split(","))
    return next(filter(None, found), None)


def cron_values(field: str, low: int, high: int, names: tuple) -> set[int]:
    """The numbers a valid cron field matches."""
    values: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        ends = (
            [low, high]
            if span == "*"
            else [cron_value(e, low, high, names) for e in span.split("-")]
        )
        values.update(range(ends[0], ends[-1] + 1, int(step or 1)))
    return values


def cron_never_fires(fields: list[str]) -> str | None:
    """Explain why a valid schedule never fires (a day no chosen month has), or return None.

    With a day-of-week given too, cron fires on either day, so only a '*' day-of-week counts.
    """
    if fields[4] != "*":
        return None
    days = cron_values(fields[2], *CRON_FIELDS[2][1:])
    months = cron_values(fields[3], *CRON_FIELDS[3][1:])
    if any(day <= DAYS_IN_MONTH[month - 1] for day in days for month in months):
        return None
    return (
        f"never runs: no month in field 4 ({fields[3]}) has day {fields[2]}; "
        "choose a day that those months have"
    )


def check_cron(answers: dict, key: str) -> list[str]:
    """Check that a schedule is a five-field cron, each field valid for its position."""
    value = text(answers, key)
    fields = value.split()
    if len(fields) != len(CRON_FIELDS):
        message = (
            f"{key}={value!r} has {len(fields)} fields: a cron needs exactly five "
            "(minute hour day-of-month month day-of-week)"
        )
        return [message]
    problems = []
    for position, (field, rule) in enumerate(zip(fields, CRON_FIELDS, strict=True), start=1):
        name, low, high, names = rule
        problem = cron_field_problem(field, low, high, names)
        if problem:
            problems.append(f"{key}={value!r}: field {position} ({name}) {problem}")
    never = None if problems else cron_never_fires(fields)
    return problems + ([f"{key}={value!r} {never}"] if never else [])


def check_storage(answers: dict) -> list[str]:
    """Check the S3 bucket (needed only by the s3 remote) and the key prefix."""
    problems = []
    bucket = text(answers, "s3_bucket")
    valid_bucket = (
        BUCKET.fullmatch(bucket)
        and ".." not in bucket
        and not IP_ADDRESS.fullmatch(bucket)
        and not bucket.startswith("xn--")
    )
    # Checked whenever given: a later switch to the s3 remote would carry it forward.
    if (answers["data_remote"] == "s3" or bucket) and not valid_bucket:
        needed = " (required with data_remote='s3')" if answers["data_remote"] == "s3" else ""
        problems.append(
            f"s3_bucket={bucket!r} is not valid{needed}: give 3-63 "
            "lowercase letters, digits, single dots and hyphens, starting and ending "
            "with a letter or digit, neither an IP address nor starting with 'xn--'"
        )
    prefix = text(answers, "s3_prefix")
    if not PREFIX.fullmatch(prefix):
        problems.append(
            f"s3_prefix={prefix!r} is not valid: use letters, digits, '.', '_' and '-' in parts "
            "joined by single '/'; it must not start or end with '/'"
        )
    return problems


def validate(answers: dict) -> list[str]:
    """Return every problem with the answers, one message each."""
    return [
        *check_project_name(answers),
        *check_target_column(answers),
        *check_one_line(answers),
        *check_choices(answers),
        *check_patterns(answers),
        *check_metric(answers),
        *check_threshold(answers),
        *check_min_improvement(answers),
        *check_cron(answers, "retrain_schedule"),
        *check_cron(answers, "monitor_schedule"),
        *check_storage(answers),
    ]


def main() -> int:
    """Print every problem with the rendered answers to stderr; return 1 if any."""
    problems = validate(json.loads(ANSWERS_JSON))
    for problem in problems:
        print(f"ERROR: {problem}", file=sys.stderr)
    if problems:
        print("Nothing was generated: fix the answers above.", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
