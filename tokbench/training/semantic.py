"""Semantic regularization: align a tokenizer's features with a frozen DINOv2 teacher.

Two published recipes, one mechanism (a forward hook on one stage of the tokenizer, a
projection head, the teacher's patch features at the same grid):

* **GigaTok** (Xiong et al., 2025, "Scaling Visual Tokenizers to 3 Billion Parameters for
  Autoregressive Image Generation", Sec. 3.2): the decoder's intermediate features, projected
  by an MLP, are pulled towards DINOv2's patch features by cosine similarity, REPA-style
  (REPA's 3-layer SiLU MLP projector). Used here for the discrete families (``vq``,
  ``residual_scale``, ``holistic_1d``): ``loss = 1 - mean cosine`` over positions.
* **VA-VAE** (Yao et al., 2025, "Reconstruction vs. Generation: Taming Optimization Dilemma in
  Latent Diffusion Models", Sec. 3): the *latent* (posterior mean), projected linearly, gets the
  vision-foundation loss: a margin cosine term ``mean ReLU(1 - m1 - cos(z_i, f_i))`` plus a
  margin on the pairwise cosine-similarity matrices ``mean ReLU(|cos(z_i, z_j) - cos(f_i, f_j)| - m2)``
  (m1 = 0.5, m2 = 0.25 as published), scaled by an adaptive weight ``|grad rec| / |grad vf|`` on
  the encoder's last layer and a hyper-weight (0.1 published). Used for ``vae``.

The teacher is timm's DINOv2 architecture (``vit_small_patch14_dinov2``/``vit_base_...``)
loaded from Meta's released ``dinov2_vit{s,b}14_pretrain.pth`` on disk (timm's checkpoint
filter converts the key names and resamples the position embedding to the teacher's input
size); nothing is fetched at run time. Teacher and head live in the training module, never in
the tokenizer, so an exported tokenizer does not carry them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tokbench import weights
from tokbench.imageio import resize

# teacher name -> (timm architecture, feature width, blocks)
TEACHERS = {
    "dinov2-vits14": ("vit_small_patch14_dinov2", 384, 12),
    "dinov2-vitb14": ("vit_base_patch14_dinov2", 768, 12),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The stage each family aligns: a submodule path (its forward output is hooked) and its width.
# Conv decoders: the middle block, the first decoder stage after the codes (GigaTok aligns an
# intermediate decoder stage); the ViT decoder: its output at the patch positions; the VAE: the
# posterior mean (VA-VAE aligns the latent itself).
STAGES = {
    "vq": ("decoder.mid", lambda t: t.decoder.conv_in.out_channels),
    "residual_scale": ("decoder.mid", lambda t: t.decoder.conv_in.out_channels),
    "holistic_1d": ("decoder", lambda t: t.config["width"]),
    "vae": ("quant_conv", lambda t: t.quant_conv.out_channels // 2),
}


@dataclass(frozen=True)
class TeacherSpec:
    """``NAME[:layer=L,resolution=R]``: which teacher, which block's output (0-based, default
    the last), and the side images are resized to (a multiple of 14; 224 by default)."""

    name: str
    layer: int
    resolution: int

    @classmethod
    def parse(cls, spec: str) -> "TeacherSpec":
        name, _, rest = spec.partition(":")
        if name not in TEACHERS:
            raise ValueError(f"model.semantic_teacher: unknown teacher {name!r}; choose one of {', '.join(TEACHERS)}")
        depth = TEACHERS[name][2]
        options = {"layer": depth - 1, "resolution": 224}
        for item in filter(None, rest.split(",")):
            key, _, value = item.partition("=")
            if key not in options or not value.lstrip("-").isdigit():
                raise ValueError(f"model.semantic_teacher: {item!r} is not an option; use layer=N (0..{depth - 1}) "
                                 "or resolution=N (a multiple of 14)")
            options[key] = int(value)
        if not 0 <= options["layer"] < depth:
            raise ValueError(f"model.semantic_teacher: layer must be in 0..{depth - 1}, got {options['layer']}")
        if options["resolution"] < 14 or options["resolution"] % 14:
            raise ValueError(f"model.semantic_teacher: resolution must be a positive multiple of 14, got "
                             f"{options['resolution']}")
        return cls(name, options["layer"], options["resolution"])

    @property
    def grid(self) -> int:
        return self.resolution // 14


class FrozenTeacher(nn.Module):
    """DINOv2 patch features ``(B, N, C)`` of images in [0, 1] (resized, ImageNet-normalised)."""

    def __init__(self, spec: TeacherSpec, weights_dir: str | None = None, random_init: bool = False) -> None:
        super().__init__()
        import timm  # optional dependency (the "semantic" extra); only semantic training needs it
        from timm.models.vision_transformer import checkpoint_filter_fn

        arch, self.width, _ = TEACHERS[spec.name]
        self.spec = spec
        self.net = timm.create_model(arch, pretrained=False, img_size=spec.resolution, num_classes=0)
        if not random_init:
            path = weights.require([spec.name], weights_dir, skippable=False)[spec.name]
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, unexpected = self.net.load_state_dict(checkpoint_filter_fn(state, self.net), strict=False)
            if missing or unexpected:
                raise ValueError(f"{path}: not a {spec.name} state dict (missing {sorted(missing)[:5]}, unexpected "
                                 f"{sorted(unexpected)[:5]})")
        self.net.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)  # always in eval mode (no dropout/drop-path), whatever Lightning asks

    @torch.no_grad()
    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        r = self.spec.resolution
        x = resize(x_B3HW.float(), (r, r)) if x_B3HW.shape[-2:] != (r, r) else x_B3HW.float()
        x = (x - self.mean) / self.std
        return self.net.forward_intermediates(x, indices=[self.spec.layer], output_fmt="NLC",
                                              intermediates_only=True)[0]


def projector(in_width: int, out_width: int, hidden: int) -> nn.Module:
    """REPA's projector: Linear-SiLU-Linear-SiLU-Linear, applied per position."""
    return nn.Sequential(nn.Linear(in_width, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, out_width))


def cosine_alignment(student_BNC: torch.Tensor, teacher_BNC: torch.Tensor) -> torch.Tensor:
    """GigaTok/REPA: ``1 - mean cosine similarity`` of matching positions (0 when aligned)."""
    return 1.0 - F.cosine_similarity(student_BNC, teacher_BNC, dim=-1).mean()


def vf_loss(z_BNC: torch.Tensor, f_BNC: torch.Tensor, m1: float = 0.5, m2: float = 0.25) -> torch.Tensor:
    """VA-VAE's vision-foundation loss: marginal cosine + marginal distance-matrix terms."""
    mcos = F.relu(1.0 - m1 - F.cosine_similarity(z_BNC, f_BNC, dim=-1)).mean()
    z, f = F.normalize(z_BNC, dim=-1), F.normalize(f_BNC, dim=-1)
    mdms = F.relu((z @ z.transpose(1, 2) - f @ f.transpose(1, 2)).abs() - m2).mean()
    return mcos + mdms


def student_features(feat: torch.Tensor, family: str, patch_grid: tuple[int, int], grid: int) -> torch.Tensor:
    """The hooked stage's output as ``(B, grid*grid, C)`` on the teacher's patch grid."""
    if family == "vae":
        feat = feat.chunk(2, dim=1)[0]  # moments -> posterior mean
    if feat.dim() == 3:  # a ViT decoder's (B, L + K, C): the first h*w are the patch positions
        h, w = patch_grid
        feat = feat[:, : h * w].transpose(1, 2).reshape(feat.shape[0], -1, h, w)
    if feat.shape[-2:] != (grid, grid):
        feat = F.interpolate(feat.float(), size=(grid, grid), mode="bilinear", align_corners=False)
    return feat.flatten(2).transpose(1, 2)


class SemanticRegularizer(nn.Module):
    """Hooks the tokenizer's stage for its family and computes the alignment loss of a batch.

    ``loss(x)`` must be called after the tokenizer's forward on ``x`` (the hook keeps the
    stage's output of that forward). The teacher is held outside the module tree: it is frozen,
    so it is neither optimised nor saved in training checkpoints (resume rebuilds it from its file).
    """

    def __init__(self, tokenizer: nn.Module, spec: str, weights_dir: str | None = None, random_teacher: bool = False,
                 head_width: int = 2048) -> None:
        super().__init__()
        self.family = tokenizer.family
        if self.family not in STAGES:
            raise ValueError(f"model.semantic_teacher: no stage to align for family {self.family!r} "
                             f"(supported: {', '.join(STAGES)})")
        self.spec = TeacherSpec.parse(spec)
        path, width_of = STAGES[self.family]
        try:
            stage, width = tokenizer.get_submodule(path), width_of(tokenizer)
        except AttributeError:
            raise ValueError(f"model.semantic_teacher: {type(tokenizer).__name__} has no {path!r} stage to align "
                             f"(the {self.family} family's own model has one)") from None
        object.__setattr__(self, "teacher", FrozenTeacher(self.spec, weights_dir, random_teacher))
        teacher_width = self.teacher.width
        # VA-VAE projects the latent linearly; GigaTok/REPA use the MLP projector
        self.head = (nn.Linear(width, teacher_width) if self.family == "vae"
                     else projector(width, teacher_width, head_width))
        self.stride = tokenizer.stride
        self._captured: torch.Tensor | None = None
        stage.register_forward_hook(self._capture)

    def _capture(self, module, inputs, output) -> None:
        self._captured = output

    def loss(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        if self._captured is None:
            raise RuntimeError("SemanticRegularizer.loss() needs the tokenizer's forward pass first")
        self.teacher.to(x_B3HW.device)
        patch_grid = (-(-x_B3HW.shape[-2] // self.stride), -(-x_B3HW.shape[-1] // self.stride))
        feats = student_features(self._captured, self.family, patch_grid, self.spec.grid)
        self._captured = None
        z_BNC = self.head(feats)
        f_BNC = self.teacher(x_B3HW).to(z_BNC.dtype)
        return vf_loss(z_BNC, f_BNC) if self.family == "vae" else cosine_alignment(z_BNC, f_BNC)
