"""``tokbench``: TokBench's text table (T-ACC / T-NED by size bucket and their means).

TokBench (Wu et al. 2025, wjf5203/TokBench): every ground-truth word is read with docTR's
PARSeq from its box, words misread on the original are dropped ("refine"), the size ratio is
box width / characters / the source's longer side, words are pooled per bucket over the
dataset, and the headline is the mean of the three bucket means (TokBench prints them as
percentages; tokbench stores fractions). ``letterbox:N`` keeps every word in the evaluated
image (no crop), at TokBench's settings 256, 512 and 1024.
Not covered: TokBench's face column (its face recognizer is not dlib's).
"""
from tokbench.metrics.tokbench_text import BUCKETS
from tokbench.protocol import Protocol

PROTOCOL = Protocol(
    name="tokbench",
    title="TokBench text: T-ACC / T-NED",
    reproduces="TokBench (Wu et al. 2025) text table: T-ACC and T-NED, small / medium / large and mean, per resolution",
    data="TokBench's text images with a manifest.jsonl of word boxes (--data), or the built-in text-sizes suite",
    tasks=("text",),
    resolutions=("letterbox:256", "letterbox:512", "letterbox:1024"),
    metrics={"text": tuple(f"{kind}_{b}" for kind in ("tacc", "tned") for b in (*BUCKETS, "mean"))},
    task_options={"text": {"text_protocol": "tokbench", "ocr": "parseq"}},
    weights=("parseq",),
)
