"""One Markdown table printer for the throughput benchmarks (`gpu_check.sh` collects their tables)."""
from __future__ import annotations


def print_table(rows: list[dict]) -> None:
    """``rows`` as a Markdown table: columns in first-seen order, floats to 3 significant digits."""
    header = list(dict.fromkeys(key for row in rows for key in row))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{row[h]:.3g}" if isinstance(row.get(h), float) else str(row.get(h, ""))
                                for h in header) + " |")
