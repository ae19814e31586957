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


def test_every_public_name_has_a_row_in_the_public_tokenizer_table():
    from tokbench import registry

    text = README.read_text()
    table = text[text.index("## Public tokenizers"):text.index("Parity is tested in CI")]
    listed = {name for row in table.splitlines() if row.startswith("| `")
              for name in re.findall(r"`([a-z0-9][a-z0-9.-]*)`", row.split("|")[1])}
    public = {n for n in registry.names() if getattr(registry.get_factory(n), "release", None) is not None}
    assert len(public) >= 24 and public <= listed, sorted(public - listed)
