"""Lightning warnings that are expected for tokbench's modules, silenced with the reason."""
from __future__ import annotations

import warnings


def silence_expected_lightning_warnings() -> None:
    # The autoencoder's EMA copy (and LPIPS) stay in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # With manual optimization a checkpoint holds the weights after the step -- which is what
    # resume needs (tested bit-identical).
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # Lightning's own use of a torch API that torch deprecated; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
