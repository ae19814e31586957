"""``llamagen-rfid``: LlamaGen's tokenizer table (rFID, PSNR, SSIM on ImageNet val at 256).

LlamaGen (Sun et al. 2024, FoundationVision/LlamaGen ``reconstruction_vq_ddp.py``): the 50,000
ImageNet validation images prepared with ADM's ``center_crop_arr`` at 256, reconstructed and
rounded to 8 bits; PSNR per image then mean (tokbench's ``psnr`` is that figure), SSIM as
scikit-image's defaults with ``data_range=2.0`` (``ssim_llamagen``), rFID between the
originals and the reconstructions (LlamaGen runs ADM's evaluator; tokbench's ``rfid`` uses
torch-fidelity's port of the same TF Inception).
"""
from tokbench.protocol import Protocol

PROTOCOL = Protocol(
    name="llamagen-rfid",
    title="LlamaGen tokenizer table: rFID / PSNR / SSIM, ImageNet val 256",
    reproduces="LlamaGen (Sun et al. 2024) Table 2 / README tokenizer table: rFID, PSNR, SSIM at 256x256",
    data="ImageNet-1k validation set, all 50,000 images (--data: the ILSVRC2012 val folder, flat or by class)",
    tasks=("reconstruction",),
    resolutions=("256",),
    preprocessing="adm",
    metrics={"reconstruction": ("rfid", "psnr", "ssim_llamagen")},
    task_options={"reconstruction": {"ssim_llamagen": True}},
    num_images=50_000,
)
