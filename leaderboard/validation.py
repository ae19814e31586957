"""What a submission must satisfy before it is stored.

A refusal is a list of :class:`Problem` (the JSON path of the field and the reason) plus
the HTTP status that fits it. A submission that passes is *verified* when every dataset it
names is one of the server's known suites (same name, same fingerprint, the whole suite);
otherwise it is accepted into the *unverified* list, with the reasons recorded.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from tokbench.results import RESULTS_SCHEMA_VERSION, json_path, validate_results
from tokbench.version import __version__

# Deepest nesting of arrays/objects a submission may have. A results file needs about 6
# levels and a tokenizer config a few more; unbounded nesting crashes the parser and every
# later serialization of the entry (recursion limits), so the bound is checked on the way in.
MAX_DEPTH = 64
# Counts checked right after parsing, before any walk of the whole document (schema, metric
# ranges, storability): each is far above what tokbench writes (5 tasks, at most 23 metrics in
# one task, one dataset per task), and a flood of invented names is refused in one step.
MAX_TASKS = 32
MAX_METRICS_PER_TASK = 256
MAX_DATASETS = 64
# A refusal lists at most this many problems, plus how many there were in all.
MAX_REPORTED_PROBLEMS = 20
# Neither backend stores these in a text column: a lone UTF-16 surrogate cannot be encoded
# as UTF-8 at all, and PostgreSQL refuses NUL in text.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Fields stored in Float columns (REAL / double precision): JSON integers there become floats.
FLOAT_FIELDS = (("tokenizer", "tokens_per_image"), ("tokenizer", "bits_per_image"))


@dataclass(frozen=True)
class Problem:
    """One reason a field of a submission is refused or left unverified."""

    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """``{"field": ..., "reason": ...}`` as the API returns it."""
        return {"field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class KnownSuite:
    """A dataset the server can vouch for: its fingerprint and, where known, its size."""

    fingerprint: str
    num_images: int | None = None


class Refused(ValueError):
    """A submission that is not stored: HTTP ``status`` and the problems (field + reason)."""

    def __init__(self, status: int, problems: list[Problem], existing_id: int | None = None):
        self.status, self.problems, self.existing_id = status, problems, existing_id
        shown = "; ".join(f"{p.field}: {p.reason}" for p in problems[:MAX_REPORTED_PROBLEMS])
        more = len(problems) - MAX_REPORTED_PROBLEMS
        super().__init__(shown + (f"; and {more:,} more" if more > 0 else ""))


@dataclass
class Candidate:
    """A submission that passed validation, ready to be stored."""

    results: dict[str, Any]
    text: str
    status: str  # "verified" | "unverified"
    reasons: list[Problem] = field(default_factory=list)
    duplicate_key: str = ""


def default_accepted_versions() -> SpecifierSet:
    """Versions of the server's own minor series, e.g. ``~=0.1.0`` for tokbench 0.1.x."""
    release = Version(__version__).release
    return SpecifierSet(f"~={release[0]}.{release[1] if len(release) > 1 else 0}.0")


def parse_specifier(text: str) -> SpecifierSet:
    """A PEP 440 version specifier such as ``>=0.1,<0.3``; ``ValueError`` if it is not one."""
    try:
        return SpecifierSet(text)
    except InvalidSpecifier as err:
        raise ValueError(f"--accept-versions: not a version specifier: {text!r} ({err})") from err


def load_known_suites(path: str | Path | None = None) -> dict[str, KnownSuite]:
    """Known suites from a JSON file, or the built-in suites of this tokbench installation.

    The file maps a dataset name to its fingerprint, or to ``{"fingerprint": ..., "num_images": N}``.
    Without a file, the fingerprints come from ``tokbench.tasks.suites.builtin_fingerprints``
    (and sizes from the suites themselves); where the tasks package is not installed, no suite
    is known and every submission goes to the unverified list.
    """
    if path is not None:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--known-suites {path}: cannot read a JSON object ({err})") from err
        if not isinstance(raw, dict):
            raise ValueError(f"--known-suites {path}: expected an object mapping suite name to fingerprint")
        suites = {}
        for name, value in raw.items():
            spec = value if isinstance(value, dict) else {"fingerprint": value}
            if not isinstance(spec.get("fingerprint"), str) or len(spec["fingerprint"]) != 64:
                raise ValueError(f"--known-suites {path}: {name}: fingerprint must be 64 hex characters")
            suites[name] = KnownSuite(spec["fingerprint"], spec.get("num_images"))
        return suites
    try:
        from tokbench.tasks import suites as builtin
    except ImportError:
        return {}
    return {name: KnownSuite(fp, len(builtin.load_suite(name).items))
            for name, fp in builtin.builtin_fingerprints().items()}


def duplicate_key(results: dict[str, Any]) -> str:
    """SHA-256 identifying "the same result": checkpoint, datasets (name, fingerprint, resolution), version,
    and each task's scoring protocol where it records one (``extra.protocol``: the text task's
    word-level protocol and recognizer -- the same images scored another way are another result).

    Codec baselines have no checkpoint file; their identity is the tokenizer name and config.
    """
    tok = results["tokenizer"]
    checkpoint = tok["checkpoint_sha256"] or {"name": tok["name"], "config": tok["config"]}
    datasets = sorted((d["name"], d["fingerprint"], d["resolution"]) for d in results["datasets"])
    identity = {"checkpoint": checkpoint, "datasets": datasets, "tokbench": results["tokbench"]["version"]}
    protocols = {name: block["extra"]["protocol"] for name, block in results.get("tasks", {}).items()
                 if isinstance(block, dict) and isinstance(block.get("extra"), dict) and "protocol" in block["extra"]}
    if protocols:  # absent from results without one: their key is unchanged
        identity["protocols"] = protocols
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _parse(body: bytes) -> tuple[dict[str, Any], str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Refused(422, [Problem("$", f"body is not UTF-8 text ({err.reason} at byte {err.start})")]) from err

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not valid JSON (metric values must be finite numbers)")

    try:
        obj = json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as err:
        raise Refused(422, [Problem("$", f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}")]) from err
    except ValueError as err:  # also integers of more than 4300 digits
        raise Refused(422, [Problem("$", str(err))]) from err
    except RecursionError:
        raise Refused(422, [Problem("$", f"nested too deeply (at most {MAX_DEPTH} levels of arrays and objects)")]) from None
    if not isinstance(obj, dict):
        raise Refused(422, [Problem("$", "a results file is a JSON object")])
    problems = count_problems(obj)
    if problems:
        raise Refused(422, problems)
    problems = storable_problems(obj)
    if problems:
        raise Refused(422, problems)
    return obj, text


def count_problems(obj: dict[str, Any]) -> list[Problem]:
    """Tasks, metrics per task and datasets over `MAX_TASKS`, `MAX_METRICS_PER_TASK`, `MAX_DATASETS`.

    Looks at container sizes only (no walk of the document), so a submission of 30,000 invented
    names costs its JSON parse and nothing more. Names are not echoed: they are not checked yet.
    """
    problems = []
    tasks, datasets = obj.get("tasks"), obj.get("datasets")
    if isinstance(tasks, dict) and len(tasks) > MAX_TASKS:
        problems.append(Problem("$.tasks", f"{len(tasks):,} tasks; expected at most {MAX_TASKS}"))
    elif isinstance(tasks, dict):
        for i, block in enumerate(tasks.values()):
            metrics = block.get("metrics") if isinstance(block, dict) else None
            if isinstance(metrics, dict) and len(metrics) > MAX_METRICS_PER_TASK:
                problems.append(Problem("$.tasks", f"task {i + 1} of {len(tasks)} has {len(metrics):,} metrics; "
                                                   f"expected at most {MAX_METRICS_PER_TASK} per task"))
    if isinstance(datasets, list) and len(datasets) > MAX_DATASETS:
        problems.append(Problem("$.datasets", f"{len(datasets):,} datasets; expected at most {MAX_DATASETS}"))
    return problems


def storable_problems(obj: Any, max_depth: int = MAX_DEPTH) -> list[Problem]:
    """Problems that would break storing or serving a parsed document: nesting deeper than
    ``max_depth``, strings or keys holding NUL or a lone surrogate (at most 5 reported).

    Iterative, so a document of any depth is checked without recursion.
    """
    problems: list[Problem] = []
    stack: list[tuple[Any, tuple, int]] = [(obj, (), 1)]
    while stack and len(problems) < 5:
        value, parts, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                # The path to where the limit is crossed would be max_depth keys long: name its start.
                shown = json_path(parts[:4]) + (".…" if len(parts) > 4 else "")
                problems.append(Problem(shown, f"nested more than {max_depth} levels deep (at most {max_depth} levels "
                                               "of arrays and objects)"))
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and UNSTORABLE.search(key):
                    problems.append(Problem(json_path(parts), f"key {_shown(key)} {_unstorable_reason(key)}"))
                stack.append((item, (*parts, key), depth + 1))
        elif isinstance(value, str) and UNSTORABLE.search(value):
            problems.append(Problem(json_path(parts), _unstorable_reason(value)))
    return problems


def _shown(text: str) -> str:
    return ascii(text[:40] + ("…" if len(text) > 40 else ""))


def _unstorable_reason(text: str) -> str:
    bad = UNSTORABLE.search(text).group()
    what = "a NUL character (U+0000)" if bad == "\x00" else f"a lone UTF-16 surrogate (U+{ord(bad):04X})"
    return f"contains {what}; expected text without NUL or unpaired surrogates"


def _as_floats(results: dict[str, Any]) -> list[Problem]:
    """Turn JSON integers in the fields stored as 64-bit floats into floats (in place);
    problems for integers beyond the float range."""
    problems = []

    def convert(container: Any, key: Any, parts: tuple) -> None:
        value = container[key]
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                container[key] = float(value)
            except OverflowError:
                problems.append(Problem(json_path(parts), "out of range: expected a number a 64-bit float can hold "
                                                          "(magnitude below 1.8e308)"))

    for section, name in FLOAT_FIELDS:
        convert(results[section], name, (section, name))
    for task, block in results["tasks"].items():
        for metric, m in block["metrics"].items():
            where = ("tasks", task, "metrics", metric)
            convert(m, "mean", (*where, "mean"))
            for i in range(len(m["ci95"])):
                convert(m["ci95"], i, (*where, "ci95", i))
    return problems


def _verification(results: dict[str, Any], known: dict[str, KnownSuite]) -> list[Problem]:
    reasons = []
    for i, dataset in enumerate(results["datasets"]):
        where = f"$.datasets[{i}]"
        suite = known.get(dataset["name"])
        if suite is None:
            reasons.append(Problem(f"{where}.name", f"{dataset['name']!r} is not one of the server's known suites"))
        elif dataset["fingerprint"] != suite.fingerprint:
            reasons.append(Problem(f"{where}.fingerprint",
                                   f"does not match the known fingerprint of suite {dataset['name']!r}"))
        elif suite.num_images is not None and dataset["num_images"] != suite.num_images:
            reasons.append(Problem(f"{where}.num_images",
                                   f"evaluated on {dataset['num_images']} of the suite's {suite.num_images} images"))
    return reasons


def check_submission(body: bytes, accepted: SpecifierSet, known: dict[str, KnownSuite]) -> Candidate:
    """Parse and validate a submitted ``results.json``; :class:`Refused` (422) naming each bad field.

    Duplicates are not checked here (the store checks them atomically through a unique key).
    """
    obj, text = _parse(body)
    if obj.get("schema_version") != RESULTS_SCHEMA_VERSION:
        raise Refused(422, [Problem("$.schema_version", f"this server accepts schema version {RESULTS_SCHEMA_VERSION}, "
                                                        f"got {obj.get('schema_version')!r}")])
    errors = validate_results(obj)
    if errors:
        raise Refused(422, [Problem(*e.split(": ", 1)) for e in errors])
    problems = _as_floats(obj)
    if problems:
        raise Refused(422, problems)
    version = obj["tokbench"]["version"]
    try:
        ok = Version(version) in accepted
    except InvalidVersion:
        raise Refused(422, [Problem("$.tokbench.version", f"{version!r} is not a version number")]) from None
    if not ok:
        raise Refused(422, [Problem("$.tokbench.version", f"tokbench {version} is not accepted by this server "
                                                          f"(accepted: {accepted or 'any'})")])
    reasons = _verification(obj, known)
    return Candidate(results=obj, text=text, status="unverified" if reasons else "verified",
                     reasons=reasons, duplicate_key=duplicate_key(obj))
