"""The release configurations of the public names are reachable by the same code.

Each public name is built at its release size on the meta device (no memory, no weights)
and its state dict, in the upstream's names, is counted against the numbers the fixture
README gives for the real files: keys and tensor elements (buffers included).
"""
from __future__ import annotations

import pytest
import torch

from tokbench import registry
from tokbench.tokenizers.public import llamagen, open_magvit2, taming, titok, var
from tokbench.tokenizers.public.conv_keys import autoencoder_keymap


def _build_meta(name: str):
    with torch.device("meta"):
        return registry.create(name)


def _upstream_counts(model, keymap) -> tuple[int, int]:
    """(keys, elements) of the upstream state dict the keymap reads (a q/k/v concat counts 3 keys)."""
    own = model.state_dict()
    keys = len(keymap.upstream_keys())
    elements = sum(own[e.dst].numel() for e in keymap.entries)
    assert {e.dst for e in keymap.entries} <= set(own), "the keymap names tensors the model does not have"
    return keys, elements


# Training-only entries of taming's last.ckpt (loss.*), counted from the upstream classes:
# LPIPS = VGG16 features (13 convs, 14,714,688) + 5 linear heads (1,472) + 2 scaling buffers (6);
# PatchGAN with 2 layers, ndf 64: 3->64 (+bias), 64->128 + BatchNorm, 128->256 (stride 1) +
# BatchNorm, 256->1 (+bias); BatchNorm = weight, bias, running mean/var, num_batches_tracked.
TAMING_LOSS_KEYS = 26 + 5 + 2 + (2 + 1 + 5 + 1 + 5 + 2)
TAMING_LOSS_ELEMENTS = (14_714_688 + 1_472 + 6
                        + (3 * 64 * 16 + 64) + (64 * 128 * 16 + 4 * 128 + 1) + (128 * 256 * 16 + 4 * 256 + 1)
                        + (256 * 16 + 1))

CASES = {
    # name: (keys, elements, tokens at 256 px) from the fixture README's release table
    "llamagen-vq16": (344, 71_948_939, 256),
    "var-vqvae": (324, 108_989_315, 680),
    "titok-s128": (308, 83_674_639, 128),
    "titok-l32": (692, 641_054_735, 32),
    "taming-vqgan-f16-16384": (392, 91_454_156, 256),
    "sd-vae-kl-f8": (248, 83_653_863, 32 * 32),
    # the generator alone (the file adds an EMA shadow of it and the loss modules, both ignored)
    "open-magvit2-lfq": (339, 115_127_829, 256),
}


def _keymap_and_extra(name: str, model) -> tuple[object, int, int]:
    """The upstream keymap of ``name`` at its release config, plus keys/elements the file holds
    that tokbench ignores (usage statistics, loss modules)."""
    cfg = model.config
    if name.startswith("llamagen"):
        return llamagen.keymap_for(cfg), 1, 65536  # quantize.codebook_used
    if name == "var-vqvae":
        return var.keymap_for(cfg), 1, len(cfg["scales"]) * cfg["codebook_size"]  # quantize.ema_vocab_hit_SV
    if name.startswith("titok"):
        return titok.keymap_for(model), 0, 0
    if name.startswith("open-magvit2"):
        return open_magvit2.keymap_for(model, ema=False), 0, 0
    if name.startswith("taming"):
        return taming.keymap_for(cfg), TAMING_LOSS_KEYS, TAMING_LOSS_ELEMENTS
    return autoencoder_keymap("ldm", cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"]), 0, 0


@pytest.mark.parametrize("name", list(CASES))
def test_release_size_matches_the_public_file(name):
    keys, elements, tokens = CASES[name]
    model = _build_meta(name)
    keymap, extra_keys, extra_elements = _keymap_and_extra(name, model)
    got_keys, got_elements = _upstream_counts(model, keymap)
    assert (got_keys + extra_keys, got_elements + extra_elements) == (keys, elements)
    layout = model.layout_for(256, 256)
    assert layout.num_tokens == tokens


def test_diffusers_naming_of_the_sd_release_has_the_same_size():
    model = _build_meta("sd-vae-kl-f8")
    cfg = model.config
    km = autoencoder_keymap("diffusers", cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"])
    assert _upstream_counts(model, km) == (248, 83_653_863)
    assert "decoder.up_blocks.0.resnets.2.conv1.weight" in km.upstream_keys()  # 3 resnets per up block


def test_release_key_names_follow_the_upstream_layouts():
    km = llamagen.keymap_for(_build_meta("llamagen-vq16").config).upstream_keys()
    assert {"encoder.conv_blocks.4.attn.1.q.weight", "decoder.conv_blocks.0.attn.2.proj_out.bias",
            "encoder.conv_blocks.2.res.0.nin_shortcut.weight", "quantize.embedding.weight"} <= km
    km = var.keymap_for(_build_meta("var-vqvae").config).upstream_keys()
    assert {"encoder.mid.attn_1.qkv.weight", "quantize.quant_resi.qresi_ls.3.weight",
            "decoder.up.4.attn.2.qkv.bias"} <= km
    km = taming.keymap_for(_build_meta("taming-vqgan-f16-16384").config).upstream_keys()
    assert {"encoder.down.4.attn.1.k.weight", "decoder.up.4.attn.2.v.bias", "decoder.up.1.upsample.conv.weight"} <= km
    assert "decoder.up.3.attn.0.q.weight" not in km


@pytest.mark.parametrize("name", ["llamagen-vq8", "taming-vqgan-f16-1024", "titok-b64", "mar-kl16", "sd-vae-ft-mse"])
def test_other_public_names_build(name):
    model = _build_meta(name)
    assert model.num_parameters() > 10_000_000
    assert model.layout_for(256, 256).num_tokens > 0
    assert registry.get_factory(name).release.preprocessing


def test_janus_and_chameleon_release_sizes():
    """Counted with the upstream classes at the release configurations: Janus's ``VQ_16()``
    (``gen_vision_model.*``: 344 keys, 71,948,939 elements, ``quantize.codebook_used`` included --
    LlamaGen's VQ-16 to the tensor) and Chameleon's ``VQModel`` at its ``vqgan.yaml`` (ch 128,
    ch_mult 1,1,2,2,4, 2 res blocks, z 256, 8,192 codes of 256, ``attn_resolutions: []``): 293 keys,
    68,718,467 elements."""
    janus = _build_meta("janus-pro-vq")
    assert _upstream_counts(janus, llamagen.keymap_for(janus.config)) == (344 - 1, 71_948_939 - 65_536)
    assert janus.layout_for(384, 384).num_tokens == 576
    chameleon = _build_meta("chameleon-vqgan")
    km = taming.keymap_for(chameleon.config)
    assert _upstream_counts(chameleon, km) == (293, 68_718_467)
    assert not any(".attn." in k for k in km.upstream_keys())  # attention only in the middle blocks
    assert chameleon.layout_for(512, 512).num_tokens == 1024


def _public_names() -> list[str]:
    return sorted(n for n in registry.names() if getattr(registry.get_factory(n), "release", None) is not None)


def test_the_public_names_outnumber_vtbench_and_each_builds_at_release_size():
    # VTBench (arXiv 2505.13439) lists 24 tokenizers; the issue asks for at least that many.
    names = _public_names()
    assert len(names) >= 24, names
    for name in names:
        model = _build_meta(name)
        release = registry.get_factory(name).release
        assert release.name == name and release.files and release.preprocessing, name
        assert model.layout_for(256, 256).num_tokens > 0, name


# TiTok's single-stage releases: state dicts of upstream's TiTok(config) built on the meta device
# from configs/infer/TiTok/titok_*_{vq8k,vae_c16}.yaml (bytedance/1d-tokenizer 942a96f); the
# same count gives 308 / 83,674,639 for titok_s128.yaml, the fixture README's figure.
TITOK_SINGLE_STAGE = {
    "titok-bl64-vq8k": (459, 390_016_148, 64),
    "titok-bl128-vq8k": (459, 390_179_988, 128),
    "titok-sl256-vq8k": (411, 330_260_884, 256),
    "titok-bl64-vae-c16": (458, 389_418_100, 64),
    "titok-bl128-vae-c16": (458, 389_581_940, 128),
    "titok-ll32-vae-c16": (602, 606_879_604, 32),
}


@pytest.mark.parametrize("name", list(TITOK_SINGLE_STAGE))
def test_titok_single_stage_release_sizes(name):
    keys, elements, tokens = TITOK_SINGLE_STAGE[name]
    model = _build_meta(name)
    assert _upstream_counts(model, titok.keymap_for(model)) == (keys, elements)
    assert model.layout_for(256, 256).num_tokens == tokens


def test_emu3_release_configuration_has_the_upstream_size():
    """495 keys and 270,740,359 elements (270,740,287 parameters + BatchNorm3d statistics; 1.08 GB in
    fp32): Emu3's ``Emu3VisionVQModel(Emu3VisionVQConfig())`` -- the release's config.json is the
    defaults -- counted with the upstream classes (baaivision/Emu3 f6ea9aa)."""
    from tokbench.tokenizers.public import emu3

    model = _build_meta("emu3-vq")
    km = emu3.keymap_for(model.config)
    assert _upstream_counts(model, km) == (495, 270_740_359)
    assert {"encoder.time_conv.1.conv.conv.weight", "decoder.time_conv.1.conv.conv.bias",
            "decoder.up.3.attn.2.norm.conv_y.weight", "decoder.norm_out.norm_layer.bias",
            "encoder.time_res_stack.1.norm2.num_batches_tracked", "quant_conv.conv.weight",
            "encoder.down.3.attn.1.q.weight", "decoder.up.2.block.0.nin_shortcut.weight"} <= km.upstream_keys()
    assert model.layout_for(256, 256).num_tokens == 32 * 32
    assert model.quantize.codebook_size == 32768


# Infinity's AutoEncoder at vae_model(..., "dynamic", bits, 2**bits) (base_ch 128, multipliers 1,2,4,4,4,
# two ResNet blocks, no attention), counted with the upstream class on the meta device: 270 keys, of
# which 268 are weights and two the same ``lfq.mask`` buffer (``bits`` elements) under ``quantizer.``
# and ``quantize.``. Tokens at 256 px: Infinity's dynamic schedule 1,2,4,6,8,12,16 (521 positions).
INFINITY_WEIGHTS = {"infinity-vae-d16": 109_970_579, "infinity-vae-d24": 110_044_315,
                    "infinity-vae-d32": 110_118_051, "infinity-vae-d32reg": 110_118_051,
                    "infinity-vae-d64": 110_412_995}


@pytest.mark.parametrize("name", sorted(INFINITY_WEIGHTS))
def test_infinity_release_size_matches_the_upstream_model(name):
    from tokbench.tokenizers.public import infinity

    model = _build_meta(name)
    km = infinity.keymap_for(model.config)
    assert _upstream_counts(model, km) == (268, INFINITY_WEIGHTS[name])
    assert {"encoder.conv_in.conv.weight", "encoder.down.1.block.0.nin_shortcut.conv.weight",
            "encoder.down.3.downsample.conv.conv.bias", "decoder.up.4.block.2.norm2.norm.weight",
            "decoder.up.1.upsample.conv.conv.weight", "decoder.mid.block_2.conv2.conv.bias"} <= km.upstream_keys()
    assert model.layout_for(256, 256).num_tokens == 521
    assert model.layout_for(512, 512).scales == (1, 2, 4, 6, 8, 12, 16, 20, 24, 32)
    assert model.layout_for(1024, 1024).num_tokens == sum(s * s for s in infinity.INFINITY_SCALES)


# MaskBit's ConvVQModel at configs/tokenizer/maskbit_tokenizer_{N}bit.yaml, counted with the upstream
# classes (commit 5ea3d73): 177 keys, elements with the LFQ buffers bits_to_indices (N) and codebook (2**N x N).
MASKBIT_CASES = {10: 54_479_255, 12: 54_528_411, 14: 54_718_879, 16: 55_548_323, 18: 59_228_583}


@pytest.mark.parametrize("bits", sorted(MASKBIT_CASES))
def test_maskbit_release_size_matches_the_upstream_model(bits):
    from tokbench.tokenizers.public import maskbit

    model = _build_meta(f"maskbit-{bits}bit")
    keys, elements = _upstream_counts(model, maskbit.keymap_for(model))
    assert (keys + 2, elements + bits + 2 ** bits * bits) == (177, MASKBIT_CASES[bits])
    assert model.layout_for(256, 256).num_tokens == 256 and model.layout_for(256, 256).vocab_size == 2 ** bits
    upstream = maskbit.keymap_for(model).upstream_keys()
    assert {"encoder.down.0.res_blocks.1.conv2.weight", "encoder.down.3.down_conv.bias",
            "encoder.down.4.res_blocks.0.nin_shortcut.weight", "decoder.up.1.res_blocks.0.nin_shortcut.weight",
            "decoder.up.3.upsample_conv.weight", "encoder.mid.res_blocks.1.norm2.bias"} <= upstream
    assert not {"encoder.down.4.down_conv.weight", "decoder.up.4.upsample_conv.weight"} & upstream


# VQGAN+ (MaskBit's ConvVQModel with SimpleVectorizer) at configs/tokenizer/vqgan_plus_{10,12}bit.yaml,
# counted with the upstream classes: 176 keys (the codebook quantize.embedding.weight, no LFQ buffers).
@pytest.mark.parametrize("bits,elements", [(10, 55_990_915), (12, 55_007_683)])
def test_vqgan_plus_release_size_matches_the_upstream_model(bits, elements):
    from tokbench.tokenizers.public import maskbit

    model = _build_meta(f"vqgan-plus-{bits}bit")
    assert _upstream_counts(model, maskbit.keymap_for(model)) == (176, elements)
    assert model.layout_for(256, 256).num_tokens == 256 and model.layout_for(256, 256).vocab_size == 2 ** bits


def test_maskgit_tokenizer_release_size_matches_the_upstream_model():
    """configs/external/maskgit_tokenizer.yaml with ConvVQModel(legacy=True), counted with the upstream
    classes: 168 keys (no resampling convs in the encoder: average pooling)."""
    from tokbench.tokenizers.public import maskbit

    model = _build_meta("maskgit-tokenizer")
    assert _upstream_counts(model, maskbit.keymap_for(model, legacy_decoder=True)) == (168, 54_515_587)
    assert "decoder.up.4.upsample_conv.weight" in maskbit.keymap_for(model, legacy_decoder=True).upstream_keys()


# Cosmos image tokenizers: the whole network's state dict (= encoder.jit's + decoder.jit's parameters),
# counted with NVIDIA's ContinuousImageTokenizer / DiscreteImageTokenizer at networks/configs.py with
# spatial_compression 8 or 16 (commit 3584ae7). The archives also store buffers upstream's state dict
# leaves out (Haar taps, the FSQ level tables and implicit codebook): read, checked, not loaded.
COSMOS_CASES = {
    "cosmos-ci8x8": (198, 76_789_472, 32 * 32),
    "cosmos-ci16x16": (202, 81_509_088, 16 * 16),
    "cosmos-di8x8": (198, 79_004_342, 32 * 32),
    "cosmos-di16x16": (202, 83_723_958, 16 * 16),
}


@pytest.mark.parametrize("name", list(COSMOS_CASES))
def test_cosmos_release_size_matches_the_upstream_network(name):
    from tokbench.tokenizers.public import cosmos

    model = _build_meta(name)
    keys, elements, tokens = COSMOS_CASES[name]
    assert _upstream_counts(model, cosmos.keymap_for(model.config)) == (keys, elements)
    assert model.num_parameters() == elements
    assert model.layout_for(256, 256).num_tokens == tokens


def test_bsq_vit_release_size_matches_the_upstream_model():
    """BSQ-ViT's VITBSQModel at imagenet_256x256_bsqvit_b18g18 (b18g2 alike): 309 state-dict entries (the
    file's ``state_dict`` under ``module.``, ``ema_state_dict`` under ``module.module.``), 174,816,210
    parameters plus the quantizer's ``basis`` (18) and ``group_basis`` (1; 9 for b18g2) buffers,
    174,816,229 elements -- counted with the upstream class on the meta device."""
    from tokbench.tokenizers.public import bsq_vit

    model = _build_meta("bsq-vit-18bit")
    keys, elements = _upstream_counts(model, bsq_vit.keymap_for(model))
    assert (keys + len(bsq_vit.QUANTIZER_BUFFERS), elements + 18 + 1) == (309, 174_816_229)
    assert model.layout_for(256, 256).num_tokens == 32 * 32
    assert model.layout_for(256, 256).bits_per_image == 32 * 32 * 18


def test_hita_release_size_matches_the_upstream_count():
    """845 keys / 408,744,647 elements (Hita-V) and 850 / 409,271,495 (Hita-U): CVMI-Lab/Hita's
    ``VQ_16(codebook_size=16384, codebook_embed_dim=8, z_channels=512)`` with
    ``configs/hita_vqgan{,_ultra}.yaml``, DINOv2 ViT-L/14-reg included, counted with the upstream
    classes. The loader maps all but the training-only entries it drops: the two 65,536-entry
    ``codebook_used`` buffers, DINO's mask token, and Hita-U's 5-tensor feature-reconstruction head."""
    from tokbench.tokenizers.public import hita

    ignored = {"hita-vqgan": (3, 2 * 65536 + 1024), "hita-vqgan-ultra": (8, 2 * 65536 + 1024 + 526_848)}
    counts = {}
    for name, (n_ignored, e_ignored) in ignored.items():
        model = _build_meta(name)
        km, own = hita.keymap_for(model), model.state_dict()
        counts[name] = (len(km.upstream_keys()) + n_ignored, sum(own[e.dst].numel() for e in km.entries) + e_ignored)
        assert model.layout_for(336, 336).num_tokens == 569  # README's "tokens: 569"
    assert counts == {"hita-vqgan": (845, 408_744_647), "hita-vqgan-ultra": (850, 409_271_495)}


# GigaTok's releases: state dicts of upstream's VQVitModelPlus built on the meta device from
# configs/vq/VQ_{SS,SB,BL,XLXXL}256.yaml (SilentView/GigaTok 182920c; out_inner_dim 768 as
# load_model_from_config sets it). The file also holds quantize.codebook_used (65,536) and the
# 3-layer s1to2decoder.distill_mlp, both training-only and ignored.
GIGATOK = {
    "gigatok-ss256": (538, 136_138_763),
    "gigatok-sb256": (646, 232_465_163),
    "gigatok-bl256": (970, 621_702_667),
    "gigatok-xlxxl256": (1834, 2_894_035_979),
}


@pytest.mark.parametrize("name", list(GIGATOK))
def test_gigatok_release_sizes(name):
    from tokbench.tokenizers.public import gigatok

    model = _build_meta(name)
    w = model.config["dec_width"]
    distill_mlp = (w * 4 * w + 4 * w) + (16 * w * w + 4 * w) + (4 * w * 768 + 768)
    keys, elements = _upstream_counts(model, gigatok.keymap_for(model))
    assert (keys + 1 + 6, elements + 65_536 + distill_mlp) == GIGATOK[name]
    assert model.layout_for(256, 256).num_tokens == 256


def test_unitok_release_size_matches_the_upstream_count():
    """1,335 keys / 820,333,508 elements: FoundationVision/UniTok's ``UniTok(Args())`` (bb8012e; the
    defaults are the release's: ``vitamin_large``, 32,768 codes in 8 codebooks of 64 channels,
    ``attn`` projections, a 12-layer 768-wide CLIP text tower), built with the upstream classes.
    The loader maps all but the CLIP half (text tower 149 keys / 123,650,304, ``fc_norm`` 2 / 2,048,
    ``projection`` 2 / 787,200, ``logit_scale``), the 8 ``vocab_usage`` statistics (4,096 each) and
    the two constant ``zero_k_bias`` buffers (1,024 each)."""
    from tokbench.tokenizers.public import unitok

    model = _build_meta("unitok-large")
    keys, elements = _upstream_counts(model, unitok.keymap_for(model))
    clip = (149 + 2 + 2 + 1, 123_650_304 + 2_048 + 787_200 + 1)
    assert (keys + clip[0] + 8 + 2, elements + clip[1] + 8 * 4096 + 2 * 1024) == (1335, 820_333_508)
    assert model.layout_for(256, 256).num_tokens == 256 * 8  # README's 16 x 16 x 8 code shape


# SEED-Voken's other releases, counted with the upstream classes on the meta device (commit
# b9a17ea): improved_model Encoder + Decoder (LFQ holds no saved tensors) at
# configs/Open-MAGVIT2/gpu/{imagenet_lfqgan_128_L,pretrain_lfqgan_256_262144,pretrain_lfqgan_256_16384}.yaml
# -- the same count gives 339 / 115,127,829 for imagenet_lfqgan_256_L.yaml, the figure above; IBQ's
# Encoder, Decoder, quant convs and IndexPropagationQuantize at configs/IBQ/gpu/pretrain_ibqgan_*.yaml.
SEED_VOKEN_MORE = {
    "open-magvit2-lfq-128": (283, 112_021_653, 128, 256),
    "open-magvit2-pretrain-262144": (339, 115_127_829, 256, 256),
    "open-magvit2-pretrain-16384": (339, 115_094_033, 256, 256),
    "ibq-pretrain-16384": (543, 110_982_019, 256, 256),
    "ibq-pretrain-262144": (543, 173_896_579, 256, 256),
}


@pytest.mark.parametrize("name", list(SEED_VOKEN_MORE))
def test_seed_voken_more_release_sizes(name):
    keys, elements, side, tokens = SEED_VOKEN_MORE[name]
    model = _build_meta(name)
    keymap = (open_magvit2.keymap_for(model, ema=False) if name.startswith("open-magvit2")
              else taming.keymap_for(model.config))
    assert _upstream_counts(model, keymap) == (keys, elements)
    assert model.layout_for(side, side).num_tokens == tokens


# latent-diffusion's VQ first stages, counted with the upstream classes on the meta device (LDM
# a506df5 Encoder/Decoder + taming 3ba01b2 VectorQuantizer2 and the quant convs, at
# models/first_stage_models/vq-f{4,8}/config.yaml; the checkpoints' loss.* entries are not counted).
LDM_VQ = {"ldm-vq-f4": (205, 55_322_782, 64 * 64, 8192), "ldm-vq-f8": (299, 67_717_295, 32 * 32, 16384)}


@pytest.mark.parametrize("name", list(LDM_VQ))
def test_ldm_vq_release_sizes(name):
    keys, elements, tokens, codes = LDM_VQ[name]
    model = _build_meta(name)
    assert _upstream_counts(model, taming.keymap_for(model.config)) == (keys, elements)
    assert model.layout_for(256, 256).num_tokens == tokens
    assert model.quantize.codebook_size == codes


def test_amused_vqgan_release_size():
    """277 keys / 146,244,675 elements: diffusers' ``VQModel`` (0.42.1) at ``scripts/convert_amused.py``'s
    ``make_vqvae`` options, built on the meta device; 16 x 16 ids at 256 px (32 x 32 at amused-512's 512)."""
    from tokbench.tokenizers.public import vqmodel_diffusers

    model = _build_meta("amused-vqgan")
    assert _upstream_counts(model, vqmodel_diffusers.keymap_for(model.config)) == (277, 146_244_675)
    assert model.layout_for(256, 256).num_tokens == 256 and model.layout_for(512, 512).num_tokens == 1024
    assert model.quantize.codebook_size == 8192


def test_kandinsky_movq_release_size():
    """431 keys / 67,832,495 elements: diffusers' ``VQModel`` (0.42.1) at ``MOVQ_CONFIG`` (spatial norms),
    built on the meta device; 32 x 32 ids at 256 px (f8)."""
    from tokbench.tokenizers.public import vqmodel_diffusers

    model = _build_meta("kandinsky-movq")
    assert _upstream_counts(model, vqmodel_diffusers.keymap_for(model.config, spatial=True)) == (431, 67_832_495)
    assert model.layout_for(256, 256).num_tokens == 1024 and model.quantize.codebook_size == 16384


def test_flowmo_release_sizes_match_the_upstream_count():
    """608 keys / 945,374,085 elements (FlowMo-Lo) and 608 / 945,520,081 (FlowMo-Hi): kylesargent/
    FlowMo's ``FlowMo(width=6, config)`` with ``flowmo/configs/base.yaml`` and the README's
    ``context_dim=18, codebook_size_for_entropy=9`` / ``56, 14``, counted with the upstream classes
    on the meta device (the LFQ's buffers are not persistent). The file's tensors load as they are;
    tokbench's quantizer adds only its usage counters."""
    from tokbench.tokenizers.public import flowmo

    counts, bits = {}, {}
    for name in ("flowmo-lo", "flowmo-hi"):
        model = _build_meta(name)
        own = {k: v for k, v in model.state_dict().items() if not k.endswith(flowmo.OWN_BUFFERS)}
        counts[name] = (len(own), sum(v.numel() for v in own.values()))
        layout = model.layout_for(256, 256)
        bits[name] = (layout.num_tokens, layout.vocab_size)
    assert counts == {"flowmo-lo": (608, 945_374_085), "flowmo-hi": (608, 945_520_081)}
    assert bits == {"flowmo-lo": (512, 2 ** 9), "flowmo-hi": (1024, 2 ** 14)}  # 4,608 and 14,336 bits per image


def test_maskgit_vqgan_release_size_matches_the_upstream_model():
    """1d-tokenizer's PretrainedTokenizer (modeling/modules/maskgit_vqgan.py Encoder, Decoder and
    VectorQuantizer(1024, 256) at modeling/titok.py's config), counted with the upstream classes on the
    meta device (commit 942a96f): 168 keys, 54,515,587 elements -- maskgit-tokenizer's count, in other names."""
    from tokbench.tokenizers.public import maskgit_vqgan

    model = _build_meta("maskgit-vqgan")
    keymap = maskgit_vqgan.keymap_for(model)
    assert _upstream_counts(model, keymap) == (168, 54_515_587)
    assert {"encoder.down.4.block.0.nin_shortcut.weight", "encoder.mid.1.conv2.weight",
            "decoder.up.4.upsample_conv.weight", "decoder.up.0.block.1.norm2.bias",
            "decoder.mid.0.conv1.weight", "quantize.embedding.weight"} <= keymap.upstream_keys()
    assert model.layout_for(256, 256).num_tokens == 256 and model.layout_for(256, 256).vocab_size == 1024


# RQ-VAE's stage-1 state dicts, counted with upstream's RQVAE built on the meta device from
# configs/{imagenet256,ffhq}/stage1/*-rqvae-8x8x4.yaml (kakaobrain/rq-vae-transformer 341395e). The
# shared codebook module is listed once per depth (4 x weight (n_embed + 1 rows), cluster_size_ema,
# embed_ema); the loader reads codebooks.0.weight without its padding row and ignores the rest.
RQVAE = {"rqvae-imagenet-8x8x4": (398, 133_828_483), "rqvae-ffhq-8x8x4": (398, 104_411_011)}


@pytest.mark.parametrize("name", list(RQVAE))
def test_rqvae_release_sizes(name):
    from tokbench.tokenizers.public import rqvae

    model = _build_meta(name)
    K, C, D = model.config["codebook_size"], model.config["code_dim"], model.config["depth"]
    keys, elements = _upstream_counts(model, rqvae.keymap_for(model.config))
    copies_and_ema = (D - 1 + 2 * D, (D - 1) * (K + 1) * C + D * K + D * K * C)
    assert (keys + copies_and_ema[0], elements + C + copies_and_ema[1]) == RQVAE[name]
    assert model.layout_for(256, 256).num_tokens == 8 * 8 * 4  # the 8x8x4 code shape
