"""``adm-gfid``: the class-conditional ImageNet 256 generation columns (gFID, IS, precision, recall).

LlamaGen, VAR, MAR and TiTok all score 50,000 samples with ADM's evaluator
(openai/guided-diffusion ``evaluations/evaluator.py``) against its reference batch
``VIRTUAL_imagenet256_labeled.npz``: FID from the batch's own ``mu``/``sigma``, the Inception
Score over consecutive splits of 5,000 samples, precision/recall with k = 3. Applied by
``tokbench gen score SAMPLES --ref VIRTUAL_imagenet256_labeled.npz --protocol adm-gfid``.
"""
from tokbench.protocol import Protocol

PROTOCOL = Protocol(
    name="adm-gfid",
    title="ADM evaluator: gFID / IS / precision / recall, ImageNet 256",
    reproduces="class-conditional ImageNet 256x256 generation tables (LlamaGen, VAR, MAR, TiTok): FID-50K, IS, "
               "precision, recall",
    data="50,000 samples (ADM .npz or a folder from tokbench gen sample); --ref VIRTUAL_imagenet256_labeled.npz",
    tasks=("generation",),
    resolutions=("256",),
    metrics={"generation": ("gfid", "inception_score", "precision", "recall")},
    command="gen score",
    is_split_size=5000,
    num_images=50_000,
)
