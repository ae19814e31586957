"""``vtbench``: VTBench's image-reconstruction task, as far as its protocol can be pinned.

VTBench (Lin et al. 2025, huawei-lin/VTBench; data ``huaweilin/VTBench`` on Hugging Face)
prepares each image with LANCZOS resize-to-cover and a centre crop at the tokenizer's own
input size (``src/data_processing.py``) and scores PSNR, SSIM, LPIPS and FID on the task-1
splits (ImageNet val, high-resolution, varying-resolution). This preset pins the data folder,
that preprocessing and the resolution.
Not reproduced (stated so that nobody reads these as VTBench's numbers): VTBench resizes
both images to 256 (bilinear) before scoring and accumulates PSNR/SSIM/FID with torchmetrics
over the whole set (tokbench: per image, then mean; rFID with the TF Inception); its text task
reads with Gemma-3-12B, which tokbench does not run, so its CER/WER column is not covered.
"""
from tokbench.protocol import Protocol

PROTOCOL = Protocol(
    name="vtbench",
    title="VTBench task 1: image reconstruction",
    reproduces="VTBench (Lin et al. 2025) task 1 (reconstruction) splits: PSNR, SSIM, LPIPS, FID -- "
               "same data and preprocessing, tokbench's metric definitions",
    data="a VTBench task-1 split exported to an image folder (task1-imagenet val, task1-high-resolution test, "
         "task1-varying-resolution test)",
    tasks=("reconstruction",),
    resolutions=("256", "512", "1024"),
    preprocessing="vtbench",
    metrics={"reconstruction": ("psnr", "ssim", "lpips", "rfid")},
)
