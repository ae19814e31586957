"""Infinity's bitwise multi-scale BSQ tokenizers (``infinity-vae-d16/d24/d32/d32reg/d64``).

Parity with Infinity's own ``bsq_vae`` code on small fixtures it computed (``tests/fixtures/
make_infinity_fixture.py``: upstream ``AutoEncoder`` from ``vae_model``'s own arguments, shrunk, random
weights, saved as ``{"vae": state_dict}`` and read back by upstream's ``load_cnn``), at 32 and 64 bits:
bits (and so ids) 100% equal, encoder features and reconstructions within 1e-4, end to end and
decoding upstream's ``bit_indices``; the 10-scale schedule of 512 px on a 128 px image (stride 4).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import tokbench
from tokbench import CheckpointError, Tokens
from tokbench.cli import main
from tokbench.tokenizers.public.infinity_model import MultiScaleBitQuantizer

FIXTURES = Path(__file__).parent / "fixtures" / "infinity"
TOL = 1e-4


def weights(bits: int) -> Path:
    return FIXTURES / f"infinity_vae_d{bits}_small.pth"


def expected(bits: int) -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURES / f"expected_d{bits}.npz"))


def images(uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 255


def ids_from_bits(bits_BLD: np.ndarray) -> torch.Tensor:
    """The documented layout, computed with Python integers: ``sum_c bit_c 2**c`` as a signed 64-bit value."""
    out = []
    for row in bits_BLD.astype(int).tolist():
        ids = [sum(b << c for c, b in enumerate(position)) for position in row]
        out.append([i - (1 << 64) if i >= 1 << 63 else i for i in ids])
    return torch.tensor(out, dtype=torch.long)


@pytest.mark.parametrize("bits", [32, 64])
def test_parity_with_the_upstream_code(bits):
    exp = expected(bits)
    tokenizer = tokbench.load(f"infinity-vae-d{bits}", weights=str(weights(bits)))
    x = images(exp["inputs_uint8"])
    with torch.no_grad():
        assert np.abs(tokenizer.features(x).numpy() - exp["features"]).max() <= TOL
    tokens = tokenizer.encode(x)
    assert tokens.layout.scales == tuple(exp["scales"]) == (1, 2, 4, 6, 8, 12, 16)
    assert tokens.ids.shape == exp["bits"].shape[:2] == (2, 521)
    upstream_ids = ids_from_bits(exp["bits"])
    assert (tokens.ids == upstream_ids).float().mean() >= 0.999
    bits_BLD = torch.cat([b.flatten(1, 2) for b in tokenizer.bits_of(tokens)], dim=1)
    assert (bits_BLD.numpy() == exp["bits"]).mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - exp["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=upstream_ids)  # upstream's bit labels, decoded here
    assert np.abs(tokenizer.decode(stored).numpy() - exp["recon_from_bits"]).max() <= TOL


def test_the_512_px_schedule_at_twice_the_latent_side():
    exp = expected(32)
    tokenizer = tokbench.load("infinity-vae-d32", weights=str(weights(32)))
    x = images(exp["inputs_uint8_128"])
    # Over 10 scales a few of the 80,672 bits of this random-weight model sit within float32
    # rounding of zero: with 2 threads 3 of them flip (a 32-bit id then differs, and the residual
    # every finer scale sees), with 1 thread -- the summation order the fixture was made with --
    # none does. So the bits are compared at any thread count, the ids and the end-to-end
    # reconstruction at 1 thread.
    bits_BLD = torch.cat([b.flatten(1, 2) for b in tokenizer.bits_of(tokenizer.encode(x))], dim=1)
    assert (bits_BLD.numpy() == exp["bits_128"]).mean() >= 0.9999
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tokens = tokenizer.encode(x)
    finally:
        torch.set_num_threads(threads)
    assert tokens.layout.scales == tuple(exp["scales_128"]) == (1, 2, 4, 6, 8, 12, 16, 20, 24, 32)
    assert (tokens.ids == ids_from_bits(exp["bits_128"])).float().mean() >= 0.999
    assert np.abs(tokenizer.decode(tokens).numpy() - exp["recon_128"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=ids_from_bits(exp["bits_128"]))
    assert np.abs(tokenizer.decode(stored).numpy() - exp["recon_128"]).max() <= TOL  # at any thread count


def test_ids_carry_the_bits_with_channel_0_least_significant():
    tokenizer = tokbench.load("infinity-vae-d64", weights=str(weights(64)))
    layout = tokenizer.layout_for(4, 4)  # stride 4: a single 1x1 map
    assert layout.scales == (1,) and layout.vocab_size == 2 ** 64
    ids = torch.tensor([[0], [1], [2], [5], [-1], [-(1 << 63)], [(1 << 62) + 5]])  # 7 images of one token
    bits = tokenizer.bits_of(Tokens(layout, ids=ids))[0].reshape(7, 64)
    assert bits[3, :4].tolist() == [1, 0, 1, 0] and bits[3].sum() == 2  # 5: channels 0 and 2
    assert bits[4].sum() == 64 and bits[5].tolist() == [0] * 63 + [1]  # bit 63 is the sign bit
    assert torch.equal(ids_from_bits(bits[:, None].numpy()), ids)


def test_decode_prefix_sums_the_first_scales_codes():
    exp = expected(32)
    tokenizer = tokbench.load("infinity-vae-d32", weights=str(weights(32)))
    tokens = tokenizer.encode(images(exp["inputs_uint8"]))
    lengths = tokenizer.prefix_lengths(tokens.layout)
    assert lengths == (1, 5, 21, 57, 121, 265, 521)
    bits = exp["bits"].astype(np.float32)
    f_hat, start = 0, 0
    for side in (1, 2, 4):  # the first three maps' codes, +-1/sqrt(32), bilinear to 16 x 16
        codes = torch.from_numpy((bits[:, start:start + side * side] * 2 - 1) / np.sqrt(32)).float()
        codes = codes.reshape(2, side, side, 32).permute(0, 3, 1, 2)
        f_hat = f_hat + F.interpolate(codes, size=(16, 16), mode="bilinear", align_corners=False)
        start += side * side
    with torch.no_grad():
        reference = (tokenizer.decoder(f_hat).clamp(-1, 1) + 1) / 2
    assert torch.allclose(tokenizer.decode_prefix(tokens, 21), reference, atol=TOL)
    assert torch.equal(tokenizer.decode_prefix(tokens, 521), tokenizer.decode(tokens))
    with pytest.raises(ValueError, match="must be one of 1, 5, 21, 57, 121, 265, 521, got 20"):
        tokenizer.decode_prefix(tokens, 20)


def test_the_bare_ldm_key_names_load_the_same(tmp_path):
    """``load_cnn`` also reads ``encoder.conv_in.weight`` for ``encoder.conv_in.conv.weight``."""
    blob = torch.load(weights(32), map_location="cpu", weights_only=True)
    bare = {re.sub(r"\.(conv|norm)\.(weight|bias)$", r".\2", k): v for k, v in blob["vae"].items()}
    assert "encoder.down.0.downsample.conv.weight" in bare and "encoder.conv_in.weight" in bare
    torch.save({"vae": bare}, tmp_path / "bare.pth")
    exp = expected(32)
    ids = tokbench.load("infinity-vae-d32", weights=str(tmp_path / "bare.pth")).encode(images(exp["inputs_uint8"])).ids
    assert torch.equal(ids, ids_from_bits(exp["bits"]))


def test_release_files_are_recognised_by_their_bits():
    assert tokbench.load(weights(64)).upstream["name"] == "infinity-vae-d64"
    with pytest.raises(CheckpointError, match="could be any of infinity-vae-d32, infinity-vae-d32reg"):
        tokbench.load(weights(32))  # d32 and d32reg differ only in training


def test_convert_then_load_the_plain_checkpoint(tmp_path):
    assert main(["convert", "infinity-vae-d64", "--weights", str(weights(64)), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "infinity" and plain.config["code_dim"] == 64
    exp = expected(64)
    assert torch.equal(plain.encode(images(exp["inputs_uint8"])).ids, ids_from_bits(exp["bits"]))


def test_a_missing_tensor_is_a_one_line_error_in_the_files_own_names(tmp_path):
    blob = torch.load(weights(32), map_location="cpu", weights_only=True)
    state = {k: v for k, v in blob["vae"].items() if not k.startswith("decoder.conv_out")}
    torch.save({"vae": state}, tmp_path / "broken.pth")
    missing = r"missing keys \[decoder.conv_out.conv.bias, decoder.conv_out.conv.weight\]"
    with pytest.raises(CheckpointError, match=missing) as err:
        tokbench.load("infinity-vae-d32", weights=str(tmp_path / "broken.pth"))
    assert "\n" not in str(err.value)


def test_the_bits_a_file_fixes_cannot_be_overridden():
    with pytest.raises(ValueError, match="code_dim=16 cannot be changed: the weights .* fix code_dim=32"):
        tokbench.load("infinity-vae-d32", weights=str(weights(32)), code_dim=16)


def test_quantizer_arguments_are_checked():
    with pytest.raises(ValueError, match="code_dim .* must be in 1..64, got 65"):
        MultiScaleBitQuantizer(65)
    with pytest.raises(ValueError, match="increasing schedule"):
        MultiScaleBitQuantizer(8, (1, 4, 2))
    assert MultiScaleBitQuantizer(8).schedule_for((64, 64)) == (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)
    assert MultiScaleBitQuantizer(8).schedule_for((5, 5)) == (1, 2, 4, 5)


def test_generation_refuses_more_ids_than_int32_holds_in_one_line():
    from tokbench.generation.presets import build_generator

    with torch.device("meta"):
        d32, d16 = tokbench.create("infinity-vae-d32"), tokbench.create("infinity-vae-d16")
    with pytest.raises(ValueError, match=r"vocabulary of 4,294,967,296 ids is more than 2\*\*31") as err:
        build_generator("gpt", d32.layout_for(256, 256), 0)
    assert "\n" not in str(err.value)
    with torch.device("meta"):
        assert build_generator("gpt", d16.layout_for(256, 256), 0).vocab_size == 2 ** 16


def test_eval_end_to_end_on_the_d64_fixture(tmp_path):
    """`tokbench eval --tokenizer infinity-vae-d64 --weights FILE`: PSNR of upstream's own reconstructions."""
    exp = expected(64)
    data = tmp_path / "data"
    data.mkdir()
    for i, image in enumerate(exp["inputs_uint8"]):
        Image.fromarray(image).save(data / f"{i}.png")
    out = subprocess.run([sys.executable, "-m", "tokbench", "eval", "--tokenizer", "infinity-vae-d64", "--weights",
                          str(weights(64)), "--tasks", "reconstruction", "--data", str(data), "--resolution", "native",
                          "--skip-metric", "lpips,rfid", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TOKBENCH_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    psnr = results["tasks"]["reconstruction"]["metrics"]["psnr"]["mean"]
    recon = np.round(exp["recon"].transpose(0, 2, 3, 1) * 255)  # 8 bits, as eval's images are
    mse = ((recon - exp["inputs_uint8"].astype(np.float64)) ** 2).reshape(2, -1).mean(1)
    assert abs(psnr - float(np.mean(10 * np.log10(255.0 ** 2 / mse)))) < 0.05


def test_any_image_size_round_trips_through_the_public_api():
    tokenizer = tokbench.load("infinity-vae-d32", weights=str(weights(32)))
    x = images(expected(32)["inputs_uint8"])[:, :, :33, :47]  # padded to 36 x 48: a 9 x 12 grid
    tokens = tokenizer.encode(x)
    assert tokens.layout.grid == (9, 12) and tokens.layout.scales == (1, 2, 4, 6, 8, 12)
    assert tokens.ids.shape == (2, tokens.layout.num_tokens)
    y = tokenizer.decode(tokens)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1


def test_a_token_dataset_refuses_ids_beyond_int32_before_encoding():
    from tokbench.generation.token_data import token_dtype

    with torch.device("meta"):
        d64, d24 = tokbench.create("infinity-vae-d64"), tokbench.create("infinity-vae-d24")
    with pytest.raises(ValueError, match=r"18,446,744,073,709,551,616 ids is more than 2\*\*31"):
        token_dtype(d64.layout_for(256, 256))
    assert token_dtype(d24.layout_for(256, 256)) == "int32"
