"""``var-rfid``: VAR's tokenizer rFID on ImageNet val at 256.

VAR (Tian et al. 2024, FoundationVision/VAR ``utils/data.py``) evaluates on the 50,000
ImageNet validation images resized with LANCZOS so the shorter side is 288 (1.125 x 256),
then centre-cropped to 256; rFID between originals and reconstructions.
"""
from tokbench.protocol import Protocol

PROTOCOL = Protocol(
    name="var-rfid",
    title="VAR tokenizer rFID, ImageNet val 256",
    reproduces="VAR (Tian et al. 2024): the VQVAE's reconstruction FID at 256x256",
    data="ImageNet-1k validation set, all 50,000 images (--data: the ILSVRC2012 val folder, flat or by class)",
    tasks=("reconstruction",),
    resolutions=("256",),
    preprocessing="var",
    metrics={"reconstruction": ("rfid",)},
    num_images=50_000,
)
