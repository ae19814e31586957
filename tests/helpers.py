"""Small shared pieces for the tests (imported as a plain module: tests/ has no __init__)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, transform

from tokbench.imageio import uint8_to_tensor

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def photo(name: str = "astronaut", size: int | tuple[int, int] = 64) -> torch.Tensor:
    """A real photo from scikit-image, resized with antialiasing, as ``(1, 3, H, W)`` in [0, 1]."""
    hw = (size, size) if isinstance(size, int) else size
    img = getattr(data, name)()
    small = transform.resize(img, hw, anti_aliasing=True, preserve_range=True)
    return uint8_to_tensor(np.clip(np.round(small), 0, 255).astype(np.uint8)).unsqueeze(0)


def photo_batch(size: int = 64) -> torch.Tensor:
    return torch.cat([photo(n, size) for n in SKIMAGE_PHOTOS])


def fit_autoencoder(model, x: torch.Tensor, steps: int, lr: float) -> list[float]:
    """Adam on ``MSE + the tokenizer's own losses`` over one fixed batch, seeded; the losses per step.

    Leaves the model in eval mode, ready to encode and decode.
    """
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        out = model.autoencode(x)
        loss = (out.reconstruction - x).square().mean() + sum(out.losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread for a test module (import it there): bit-identical CPU arithmetic, and on a
    shared 2-core machine no OpenMP threads spinning against other jobs (which made tiny models ~5x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def stop_at(step: int):
    """A Lightning callback that stops a run after ``step`` steps, as an interruption would (the
    learning-rate schedule still spans ``max_steps``)."""
    import lightning as L

    class StopAt(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step >= step:
                trainer.should_stop = True

    return StopAt()


def assert_ids_parity(tokenizer, x: torch.Tensor, expected, shape: tuple[int, ...], recon: str = "recon",
                      from_ids: str = "recon", tol: float = 1e-4):
    """An adapter against its upstream-made fixture (``expected``: the npz's ``indices`` and
    reconstructions): ids at least 99.9% equal, the reconstruction end to end and the one
    decoded from upstream's own ids within ``tol``. Returns the tokens."""
    from tokbench import Tokens

    tokens = tokenizer.encode(x)
    assert tokens.ids.shape == expected["indices"].shape == shape
    assert (tokens.ids.numpy() == expected["indices"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - expected[recon]).max() <= tol
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(expected["indices"]))
    assert np.abs(tokenizer.decode(stored).numpy() - expected[from_ids]).max() <= tol
    return tokens


def assert_latents_parity(tokenizer, x: torch.Tensor, expected, shape: tuple[int, ...], tol: float = 1e-4):
    """A continuous adapter against its upstream-made fixture (``expected``: the npz's ``latents``
    and ``recon``): latents, the reconstruction end to end and the one decoded from upstream's own
    latents all within ``tol``. Returns the tokens."""
    from tokbench import Tokens

    tokens = tokenizer.encode(x)
    assert tokens.latents.shape == expected["latents"].shape == shape
    assert np.abs(tokens.latents.numpy() - expected["latents"]).max() <= tol
    assert np.abs(tokenizer.decode(tokens).numpy() - expected["recon"]).max() <= tol
    stored = Tokens(tokens.layout, tokens.image_size, latents=torch.from_numpy(expected["latents"]))
    assert np.abs(tokenizer.decode(stored).numpy() - expected["recon"]).max() <= tol
    return tokens
