"""Built-in suites: generated deterministically (seeded, versioned) from data shipped offline."""
from __future__ import annotations

from functools import lru_cache

from tokbench.tasks.data import Dataset
from tokbench.tasks.suites.detail import build_detail_suite
from tokbench.tasks.suites.faces import build_faces_suite
from tokbench.tasks.suites.photos import build_photos_suite
from tokbench.tasks.suites.text import build_text_suite
from tokbench.tasks.suites.text_sizes import build_text_sizes_suite

BUILDERS = {"photos": build_photos_suite, "detail": build_detail_suite, "text": build_text_suite,
            "faces": build_faces_suite, "text-sizes": build_text_sizes_suite}


@lru_cache(maxsize=None)
def load_suite(name: str) -> Dataset:
    if name not in BUILDERS:
        raise ValueError(f"unknown built-in suite {name!r}; choose one of {sorted(BUILDERS)}")
    return BUILDERS[name]()


def builtin_fingerprints() -> dict[str, str]:
    """Fingerprint of every built-in suite (the leaderboard's list of verified datasets)."""
    return {name: load_suite(name).fingerprint() for name in BUILDERS}
