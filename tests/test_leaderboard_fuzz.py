"""Every page of every accepted fuzzed submission renders (issue #23, item 3).

Each mutant of a valid results file deletes one field, or replaces it with a value of another
type, anywhere in the document. A mutant the server accepts must be served on every page:
its entry page, the index, the TokBench view, the JSON API, and ``tokbench leaderboard export``.
(A task block without ``extra`` used to be accepted and then break its entry page with a 500.)
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator

from starlette.testclient import TestClient
from test_results_schema import FINGERPRINTS, make_results

from tokbench.leaderboard.app import Settings, asgi_app
from tokbench.leaderboard.export import export_site
from tokbench.leaderboard.query import EntryQuery
from tokbench.leaderboard.store import Store
from tokbench.leaderboard.validation import KnownSuite, Refused, check_submission, default_accepted_versions

KNOWN = {k: KnownSuite(v) for k, v in FINGERPRINTS.items()}
REPLACEMENTS = [None, "x" * 300, -1, 1e300, True, [], {"a": []}]


def paths(value, parts: tuple = ()) -> Iterator[tuple]:
    """Every path to a value inside a parsed JSON document (containers and leaves)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield (*parts, key)
        yield from paths(item, (*parts, key))


def mutants() -> Iterator[tuple[str, dict]]:
    base = make_results(checkpoint=None)
    for path in paths(base):
        *parent_path, key = path
        for replacement in ["<deleted>", *REPLACEMENTS]:
            mutant = copy.deepcopy(base)
            parent = mutant
            for part in parent_path:
                parent = parent[part]
            if replacement == "<deleted>":
                del parent[key]
            else:
                parent[key] = copy.deepcopy(replacement)
            # each its own checkpoint: accepted mutants are not duplicates of each other
            if isinstance(mutant.get("tokenizer"), dict) and "checkpoint_sha256" in mutant["tokenizer"] \
                    and path[:2] != ("tokenizer", "checkpoint_sha256"):
                mutant["tokenizer"]["checkpoint_sha256"] = make_results()["tokenizer"]["checkpoint_sha256"]
            yield f"{'.'.join(map(str, path))} -> {replacement!r:.20}", mutant


def test_every_page_of_every_accepted_mutant_renders(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'lb.db'}")
    token_id = store.authenticate(store.create_token("fuzz"))[0]
    accepted, refused = {}, 0
    for name, mutant in mutants():
        try:
            candidate = check_submission(json.dumps(mutant).encode(), default_accepted_versions(), KNOWN)
        except Refused:
            refused += 1
            continue
        accepted[store.add(candidate, token_id)] = name
    assert refused > 100 and len(accepted) > 20  # the fuzzer reaches both sides
    assert not any(name.startswith("tasks.reconstruction.extra -> '<deleted>'") for name in accepted.values())
    with TestClient(asgi_app(store, Settings(known_suites=KNOWN)), raise_server_exceptions=False) as client:
        for path in ["/", "/tokbench", "/tokbench?status=unverified", "/api/entries?status=all&limit=1000"]:
            assert client.get(path).status_code == 200, path
        for entry_id, name in accepted.items():
            for path in [f"/entries/{entry_id}", f"/api/entries/{entry_id}", f"/api/entries/{entry_id}/results.json"]:
                assert client.get(path).status_code == 200, (name, path)
    entries = store.list(EntryQuery(status="all", limit=len(accepted)))
    assert len(entries) == len(accepted)
    written = export_site(entries, {e.id: store.results(e.id) for e in entries}, tmp_path / "site")
    assert len([p for p in written if p.suffix == ".html" and p.parent.name == "entries"]) == len(accepted)
    store.close()
