"""NVIDIA Cosmos image tokenizers (CI continuous, DI FSQ) read out of their TorchScript archives.

Parity with NVIDIA's own networks on small fixtures they computed (``tests/fixtures/
make_cosmos_fixture.py``: ``ContinuousImageTokenizer``/``DiscreteImageTokenizer`` with random weights,
traced and written by ``torch.jit.save`` as the release's ``encoder.jit``/``decoder.jit``/
``autoencoder.jit``): latents within 1e-4, ids 100% equal, reconstructions within 1e-4, also when
decoding upstream's own latents/ids. The archives are never run: the tests also show that their
code is not needed and that a ``data.pkl`` naming any other global is refused before anything runs.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tokbench
from tokbench import CheckpointError, Tokens, registry
from tokbench.cli import main
from tokbench.quantize.fsq import FiniteScalarQuantizer
from tokbench.tokenizers.public import cosmos
from tokbench.tokenizers.public.cosmos_archive import read_torchscript_tensors
from tokbench.tokenizers.public.cosmos_model import RELEASE_LEVELS, haar_analysis, haar_synthesis

FIXTURES = Path(__file__).parent / "fixtures" / "cosmos"
CI_DIR, DI_DIR = FIXTURES / "ci8x8", FIXTURES / "di16x16"
CI, DI = np.load(CI_DIR / "expected.npz"), np.load(DI_DIR / "expected.npz")
X = torch.from_numpy(CI["inputs_uint8"]).permute(0, 3, 1, 2).float() / 255
TOL = 1e-4


def test_continuous_parity_with_the_upstream_code():
    tokenizer = tokbench.load("cosmos-ci8x8", weights=str(CI_DIR))
    assert tokenizer.config["enc_attn_levels"] == [1, 2] and tokenizer.config["dec_attn_levels"] == [0, 1]
    tokens = tokenizer.encode(X)
    assert tokens.latents.shape == CI["latents"].shape == (2, 16, 8, 8)
    assert np.abs(tokens.latents.numpy() - CI["latents"]).max() <= TOL
    assert np.abs(tokenizer.decode(tokens).numpy() - CI["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, latents=torch.from_numpy(CI["latents"]))
    assert np.abs(tokenizer.decode(stored).numpy() - CI["recon"]).max() <= TOL


@pytest.mark.parametrize("weights", [DI_DIR, DI_DIR / "autoencoder.jit"], ids=["encoder+decoder", "autoencoder"])
def test_discrete_parity_with_the_upstream_code(weights):
    tokenizer = tokbench.load("cosmos-di16x16", weights=str(weights))
    tokens = tokenizer.encode(X)
    assert tokens.ids.shape == DI["ids"].shape == (2, 4, 4)
    assert (tokens.ids.numpy() == DI["ids"]).mean() >= 0.999
    assert np.array_equal(tokenizer.quantize.lookup(tokens.ids).numpy(), DI["codes"])
    assert np.abs(tokenizer.decode(tokens).numpy() - DI["recon"]).max() <= TOL
    stored = Tokens(tokens.layout, tokens.image_size, ids=torch.from_numpy(DI["ids"]))
    assert np.abs(tokenizer.decode(stored).numpy() - DI["recon"]).max() <= TOL


def test_released_fsq_levels_give_upstreams_ids_and_codes():
    """FSQ (8, 8, 8, 5, 5, 5) against upstream's FSQuantizer on 4096 random vectors."""
    ref = np.load(FIXTURES / "fsq_release_levels.npz")
    fsq = FiniteScalarQuantizer(RELEASE_LEVELS).eval()
    out = fsq(torch.from_numpy(ref["z"]), channel_dim=-1)
    assert fsq.codebook_size == 64_000
    assert (out.ids.numpy() == ref["ids"]).mean() >= 0.999
    assert np.array_equal(fsq.codes_from_ids(torch.from_numpy(ref["ids"])).numpy(), ref["codes"])


def test_archive_storages_keep_their_dtype_and_names():
    tensors = read_torchscript_tensors(DI_DIR / "decoder.jit")
    assert tensors["post_quant_conv.weight"].dtype == torch.bfloat16  # the export was bfloat16
    assert tensors["inv_quant.quantizer._levels"].tolist() == [8, 5, 5, 5]
    assert read_torchscript_tensors(CI_DIR / "encoder.jit")["encoder.conv_in.weight"].dtype == torch.float32
    shapes = read_torchscript_tensors(CI_DIR / "encoder.jit", materialize=False)
    assert shapes["encoder.conv_in.weight"].is_meta and shapes["encoder.conv_in.weight"].shape == (32, 48, 3, 3)


def _rewrite(src: Path, dst: Path, replace: dict[str, bytes] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the archive ``src`` (stored, as torch.jit.save writes) with entries replaced or dropped,
    named relative to the archive's root folder."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            name = info.filename.split("/", 1)[1]
            if not name.startswith(drop):
                zout.writestr(info.filename, replace.get(name, zin.read(info.filename)))
    return dst


def test_the_archives_code_is_never_needed(tmp_path):
    for part in ("encoder.jit", "decoder.jit"):
        _rewrite(DI_DIR / part, tmp_path / part, drop=("code/", "constants"))
    assert not any("/code/" in n for n in zipfile.ZipFile(tmp_path / "encoder.jit").namelist())
    ids = tokbench.load("cosmos-di16x16", weights=str(tmp_path)).encode(X).ids.numpy()
    assert np.array_equal(ids, DI["ids"])


def _payload(kind: str, marker: Path) -> bytes:
    """A protocol-0 pickle that, unpickled by the standard library, creates ``marker``."""
    if kind == "os.system":
        return f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    return f"cbuiltins\neval\n(S'open(\"{marker}\", \"w\")'\ntR.".encode()


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval"])
def test_a_data_pkl_naming_another_global_is_refused_without_running(tmp_path, kind):
    marker = tmp_path / "ran"
    pickle.loads(_payload(kind, marker))  # the payload is live: the standard unpickler runs it
    assert marker.exists()
    marker.unlink()
    folder = tmp_path / "release"
    folder.mkdir()
    for part in ("encoder.jit", "decoder.jit"):
        _rewrite(DI_DIR / part, folder / part, {"data.pkl": _payload(kind, marker)})
    with pytest.raises(CheckpointError, match=f"refused global {kind}") as err:
        read_torchscript_tensors(folder / "encoder.jit")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match=f"refused global {kind}"):
        tokbench.load("cosmos-di16x16", weights=str(folder))
    assert not marker.exists()


def test_a_global_nested_in_a_module_state_is_refused(tmp_path):
    """An allowed scripted class whose state smuggles in a reduce of a forbidden global."""
    inner = b"c__torch__.m\nM\n)\x81}(X\x01\x00\x00\x00xcposix\nsystem\n(S'true'\ntRub."
    _rewrite(DI_DIR / "encoder.jit", tmp_path / "encoder.jit", {"data.pkl": b"\x80\x02" + inner})
    with pytest.raises(CheckpointError, match="refused global posix.system"):
        read_torchscript_tensors(tmp_path / "encoder.jit")


def test_files_that_are_no_torchscript_archive_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_torchscript_tensors(tmp_path / "absent.jit")
    with zipfile.ZipFile(tmp_path / "plain.jit", "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(CheckpointError, match="not a TorchScript archive"):
        read_torchscript_tensors(tmp_path / "plain.jit")
    (tmp_path / "text.jit").write_text("not a zip")
    with pytest.raises(CheckpointError, match="cannot be read as a TorchScript archive"):
        read_torchscript_tensors(tmp_path / "text.jit")
    called_with_args = b"\x80\x02c__torch__.m\nM\nK\x01\x85R."  # a scripted class called: M(1)
    _rewrite(DI_DIR / "encoder.jit", tmp_path / "odd.jit", {"data.pkl": called_with_args})
    with pytest.raises(CheckpointError, match="cannot be read as a TorchScript archive \\(TypeError"):
        read_torchscript_tensors(tmp_path / "odd.jit")
    _rewrite(DI_DIR / "encoder.jit", tmp_path / "flat.jit", {"data.pkl": pickle.dumps([1, 2], protocol=2)})
    with pytest.raises(CheckpointError, match="does not hold a scripted module"):
        read_torchscript_tensors(tmp_path / "flat.jit")


def test_release_folders_are_recognised_by_kind_and_compression(tmp_path):
    assert tokbench.load(str(CI_DIR)).upstream["name"] == "cosmos-ci8x8"
    assert tokbench.load(str(DI_DIR)).upstream["name"] == "cosmos-di16x16"
    assert [n for n in registry.names() if getattr(registry.get_factory(n), "recognizes", None)
            and registry.get_factory(n).recognizes(DI_DIR)] == ["cosmos-di16x16"]
    assert not cosmos.build_ci8x8.recognizes(tmp_path)


def test_a_file_of_another_kind_or_compression_is_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="holds a discrete \\(FSQ\\) tokenizer; cosmos-ci16x16 is continuous"):
        tokbench.load("cosmos-ci16x16", weights=str(DI_DIR))
    with pytest.raises(CheckpointError, match="the 8x8 tokenizer, cosmos-ci16x16 is 16x16; load it as cosmos-ci8x8"):
        tokbench.load("cosmos-ci16x16", weights=str(CI_DIR))
    with pytest.raises(CheckpointError, match="expected Cosmos's encoder.jit \\+ decoder.jit or autoencoder.jit"):
        tokbench.load("cosmos-di16x16", weights=str(tmp_path))
    with pytest.raises(CheckpointError, match="no decoder in the archive") as err:
        tokbench.load("cosmos-di16x16", weights=str(DI_DIR / "encoder.jit"))
    assert "\n" not in str(err.value)


def test_only_haar_patching_is_accepted():
    with pytest.raises(CheckpointError, match="only patch_method='haar' is supported"):
        cosmos.check_derived_buffers({"encoder.patcher.wavelets": torch.ones(2)}, "x")  # upstream's "rearrange" taps
    cosmos.check_derived_buffers({"encoder.patcher.wavelets": torch.full((2,), 0.5 ** 0.5).bfloat16()}, "x")


def test_haar_synthesis_inverts_analysis_and_splits_bands():
    x = torch.randn(2, 3, 16, 8, generator=torch.Generator().manual_seed(0))
    y = haar_analysis(x, 2)
    assert y.shape == (2, 48, 4, 2)
    assert torch.allclose(haar_synthesis(y, 2), x, atol=1e-6)
    one = haar_analysis(x, 1)
    assert torch.allclose(one[:, :3], torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)  # LL = the 2x2 mean
    rows_alike = x.repeat_interleave(2, dim=2)[:, :, ::2].repeat_interleave(2, dim=2)  # rows 2i = 2i+1
    assert haar_analysis(rows_alike, 1)[:, 3:6].abs().max() < 1e-6  # no vertical detail: LH = 0


def test_convert_writes_a_plain_cosmos_checkpoint(tmp_path):
    assert main(["convert", "cosmos-di16x16", "--weights", str(DI_DIR), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert plain.family == "cosmos" and plain.config["levels"] == [8, 5, 5, 5]
    assert np.array_equal(plain.encode(X).ids.numpy(), DI["ids"])


def test_discrete_autoencode_trains_the_encoder_through_fsq():
    model = registry.create("cosmos", ch=32, ch_mult=[1, 1], num_res_blocks=1, spatial_compression=8, z_channels=32,
                            levels=[5, 5, 5])
    out = model.autoencode(X[:, :, :32, :32])
    (out.reconstruction - X[:, :, :32, :32]).square().mean().backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0  # straight-through gradients reach the encoder
    assert model.tokens_per_image(32, 32) == 16 and model.layout_for(32, 32).vocab_size == 125


def test_release_names_build_with_the_released_layout():
    with torch.device("meta"):
        di, ci = registry.create("cosmos-di16x16"), registry.create("cosmos-ci8x8")
    assert di.layout_for(256, 256).describe() == "256 tokens (16x16 grid), vocab 64000"
    assert ci.layout_for(256, 256).describe() == "1024 tokens (32x32 grid), 16 latent channels"
    with pytest.raises(ValueError, match="spatial_compression 64 with patch_size 4 needs 4 resampled levels"):
        registry.create("cosmos-ci8x8", spatial_compression=64)


def test_eval_end_to_end_on_the_di_fixture(tmp_path):
    """`tokbench eval --tokenizer cosmos-di16x16 --weights DIR`: PSNR of the upstream's own reconstructions."""
    data = tmp_path / "data"
    data.mkdir()
    for i, image in enumerate(DI["inputs_uint8"]):
        Image.fromarray(image).save(data / f"{i}.png")
    out = subprocess.run([sys.executable, "-m", "tokbench", "eval", "--tokenizer", "cosmos-di16x16", "--weights",
                          str(DI_DIR), "--tasks", "reconstruction", "--data", str(data), "--resolution", "native",
                          "--skip-metric", "lpips,rfid", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TOKBENCH_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    psnr = results["tasks"]["reconstruction"]["metrics"]["psnr"]["mean"]
    # Reference: the upstream reconstructions, rounded to 8 bits as eval's images are, against the inputs.
    recon = np.round(DI["recon"].transpose(0, 2, 3, 1) * 255)
    mse = ((recon - DI["inputs_uint8"].astype(np.float64)) ** 2).reshape(len(recon), -1).mean(1)
    assert results["tokenizer"]["name"].startswith("cosmos-di16x16")
    assert abs(psnr - float(np.mean(10 * np.log10(255.0 ** 2 / mse)))) < 0.05


def test_sizes_off_the_stride_are_padded_and_cropped_back():
    tokenizer = tokbench.load("cosmos-ci8x8", weights=str(CI_DIR))
    x = X[:, :, :40, :52]
    tokens = tokenizer.encode(x)
    assert tokens.latents.shape == (2, 16, 5, 7)  # 40 x 56 after padding 52 to the stride 8
    assert tokenizer.decode(tokens).shape == x.shape
