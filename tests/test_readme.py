"""The README's code example runs as printed."""
import re
from pathlib import Path

import torch

import tokbench

README = Path(__file__).resolve().parents[1] / "README.md"


def test_wrapping_example_runs_and_round_trips():
    text = README.read_text()
    block = re.search(r"Wrapping your own tokenizer.*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README example", "exec"), namespace)
    tok = tokbench.create("pool8")
    x = torch.rand(2, 3, 30, 41)
    y = tok.reconstruct(x)
    assert y.shape == x.shape
    # 8x average pooling then bilinear upsampling keeps the mean brightness
    assert abs(float(y.mean() - x.mean())) < 0.02
