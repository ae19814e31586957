"""``tokbench leaderboard export``: the leaderboard as a static site (no server needed to host it).

Layout: ``index.html``, ``tokbench.html`` (the TokBench-form view), ``entries/<id>.html`` and ``entries/<id>.json`` (each submitted
results file verbatim), ``static/`` (the page's CSS and JS), ``entries.json`` (the listing).
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from tokbench.atomic import atomic_write_text
from tokbench.leaderboard.render import STATIC, render_entry, render_index, render_tokbench, static_site
from tokbench.leaderboard.store import Entry


def export_site(entries: list[Entry], results_text: dict[int, str], out: str | Path) -> list[Path]:
    """Write the site for ``entries`` (all statuses) into ``out``; the files written."""
    out = Path(out)
    (out / "entries").mkdir(parents=True, exist_ok=True)
    (out / "static").mkdir(exist_ok=True)
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    written = []
    for source in sorted(STATIC.iterdir()):
        if source.is_file():
            shutil.copyfile(source, out / "static" / source.name)
            written.append(out / "static" / source.name)

    def write(path: Path, text: str) -> None:
        atomic_write_text(path, text)
        written.append(path)

    for entry in entries:
        text = results_text[entry.id]
        write(out / "entries" / f"{entry.id}.json", text)
        write(out / "entries" / f"{entry.id}.html", render_entry(entry, json.loads(text), static_site(1), generated))
    write(out / "entries.json", json.dumps({"generated": generated, "entries": [e.to_dict() for e in entries]}, indent=1))
    write(out / "index.html", render_index(entries, static_site(0), generated=generated))
    write(out / "tokbench.html", render_tokbench(entries, static_site(0), generated=generated))
    return written
