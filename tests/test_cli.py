"""The core CLI commands, as a user runs them."""
import subprocess
import sys

from helpers import photo
from PIL import Image

from tokbench.imageio import tensor_to_uint8


def tokbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tokbench", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_list_shows_every_family_and_baseline():
    out = tokbench("list")
    assert out.returncode == 0, out.stderr
    for name in ("vq", "residual_scale", "holistic_1d", "vae", "identity", "jpeg", "webp", "resize"):
        assert name in out.stdout


def test_reconstruct_writes_images_and_side_by_side(tmp_path):
    src = tmp_path / "astro.png"
    Image.fromarray(tensor_to_uint8(photo("astronaut", (40, 52))[0])).save(src)
    out = tokbench("reconstruct", "jpeg:q=30", str(src), "--out", str(tmp_path / "rec"))
    assert out.returncode == 0, out.stderr
    assert "PSNR" in out.stdout
    assert Image.open(tmp_path / "rec" / "astro_rec.png").size == (52, 40)
    assert Image.open(tmp_path / "rec" / "astro_side_by_side.png").size == (104, 40)


def test_errors_are_one_line_without_traceback(tmp_path):
    out = tokbench("info", "no_such_tokenizer")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("tokbench: error:") and len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr
    missing = tokbench("reconstruct", "identity", str(tmp_path / "nope.png"), "--out", str(tmp_path))
    assert missing.returncode == 1 and "nope.png: no such image file" in missing.stderr
    debug = tokbench("--debug", "info", "no_such_tokenizer")
    assert "Traceback" in debug.stderr
