"""The four tokenizer families (tiny configs, CPU): the interface contract, checkpoints, gradients."""
import pytest
import torch
import torch.nn.functional as F

import tokbench
from tokbench import registry

FAMILIES = ["vq", "residual_scale", "holistic_1d", "vae"]
SIZES = [(64, 64), (40, 56), (33, 47)]


@pytest.fixture(scope="module", params=FAMILIES)
def tokenizer(request):
    torch.manual_seed(0)
    return tokbench.create(f"{request.param}:size=tiny").eval()


@pytest.mark.parametrize("hw", SIZES)
def test_round_trip_shapes_and_ranges(tokenizer, hw):
    x = torch.rand(2, 3, *hw)
    tokens = tokenizer.encode(x)
    assert tokens.kind == tokenizer.kind and tokens.image_size == hw
    if tokenizer.kind == "discrete":
        vocab = tokens.layout.vocab_size
        assert tokens.ids.dtype == torch.long and 0 <= int(tokens.ids.min()) and int(tokens.ids.max()) < vocab
        assert tokens.ids.shape[0] == 2 and tokens.ids[0].numel() == tokens.layout.num_tokens
    else:
        s = tokenizer.stride
        assert tokens.latents.shape == (2, tokens.layout.latent_channels, -(-hw[0] // s), -(-hw[1] // s))
    y = tokenizer.decode(tokens)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_training_path_agrees_with_encode_then_decode(tokenizer):
    """`autoencode` in eval mode (straight-through values, posterior mean) = decode(encode(x)) before clamping."""
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        rec = tokenizer.autoencode(x).reconstruction
        via_tokens = tokenizer.decode_padded(tokenizer.encode_padded(x))
    assert rec.shape == x.shape
    torch.testing.assert_close(rec, via_tokens, atol=1e-4, rtol=1e-4)


def test_save_then_load_gives_bit_identical_outputs(tokenizer, tmp_path):
    x = torch.rand(2, 3, 40, 56)
    tokenizer.save_pretrained(tmp_path / "ckpt")
    loaded = tokbench.load(tmp_path / "ckpt")
    assert type(loaded) is type(tokenizer) and loaded.config == tokenizer.config
    a, b = tokenizer.encode(x), loaded.encode(x)
    if tokenizer.kind == "discrete":
        assert torch.equal(a.ids, b.ids)
    else:
        assert torch.equal(a.latents, b.latents)
    assert torch.equal(tokenizer.decode(a), loaded.decode(b))


def test_gradients_reach_the_encoder_through_the_quantizer(tokenizer):
    model = tokbench.create(f"{tokenizer.family}:size=tiny").train()
    x = torch.rand(2, 3, 32, 32)
    out = model.autoencode(x)
    assert out.losses and all(v.dim() == 0 and torch.isfinite(v) for v in out.losses.values())
    # Only the reconstruction: the encoder must get gradient through the straight-through path.
    (out.reconstruction - x).square().mean().backward()
    first = next(p for n, p in model.named_parameters() if n.startswith(("encoder.conv_in", "patch_embed")))
    assert first.grad is not None and float(first.grad.abs().sum()) > 0
    last = model.last_layer()
    assert last.grad is not None and float(last.grad.abs().sum()) > 0


def test_quantizer_codes_equal_brute_force_nearest_search(tokenizer):
    if tokenizer.kind != "discrete":
        pytest.skip("continuous tokenizer has no codebook")
    x = torch.rand(2, 3, 64, 64)  # residual_scale's tiny schedule 1,2,4,8 fits an 8x8 grid exactly
    ids = tokenizer.encode(x).ids
    with torch.no_grad():
        if tokenizer.family in ("vq", "holistic_1d"):
            q = tokenizer.quantize
            z = tokenizer.features(x).movedim(1, -1) if tokenizer.family == "vq" else tokenizer.latents(x)
            z_ND = F.normalize(z.reshape(-1, q.code_dim).double(), dim=1)  # both use l2-normalized codes
            codebook = F.normalize(q.embedding.double(), dim=1)
            assert torch.equal(ids.flatten(), torch.cdist(z_ND, codebook).argmin(dim=1))
            return
        # residual_scale: replay the residual scale by scale; each map must be the brute-force
        # nearest codes of the area-downsampled residual left by the maps before it.
        q, f_BChw = tokenizer.quantize, tokenizer.features(x)
        hw = tuple(f_BChw.shape[-2:])
        maps = tokenizer.encode(x).ids_per_scale()
        codebook = q.codes.embedding.double()
        for k, (h, w) in enumerate(q.scale_shapes(*hw)):
            rest = f_BChw if k == 0 else f_BChw - q.decode(maps, hw=hw, num_scales=k)
            z_ND = F.interpolate(rest, size=(h, w), mode="area").movedim(1, -1).reshape(-1, q.codes.code_dim)
            assert torch.equal(maps[k].flatten(), torch.cdist(z_ND.double(), codebook).argmin(dim=1)), k


def test_partial_decoding_entry_points_agree(tokenizer):
    """`decode_scales` / `decode_prefix` are `decode` with ``extra["num_scales"|"num_tokens"]``; all of them = decode."""
    if tokenizer.family not in ("residual_scale", "holistic_1d"):
        pytest.skip("only the coarse-to-fine families decode from a part of their tokens")
    x = torch.rand(1, 3, 40, 56)
    tokens = tokenizer.encode(x)
    if tokenizer.family == "residual_scale":
        n, partial, key = len(tokens.layout.scales), tokenizer.decode_scales, "num_scales"
    else:
        n, partial, key = tokenizer.num_tokens, tokenizer.decode_prefix, "num_tokens"
    assert torch.equal(partial(tokens, n), tokenizer.decode(tokens))
    coarse = partial(tokens, 1)
    assert coarse.shape == x.shape and not torch.equal(coarse, tokenizer.decode(tokens))
    tokens.extra[key] = 1
    assert torch.equal(tokenizer.decode(tokens), coarse)
    for bad in (0, n + 1):
        with pytest.raises(ValueError, match=key):
            partial(tokens, bad)


def test_1d_token_count_does_not_change_with_image_size():
    tok = tokbench.create("holistic_1d:size=tiny").eval()
    for num_tokens in (16, 32):
        tok = tokbench.create(f"holistic_1d:size=tiny,num_tokens={num_tokens}").eval()
        sizes = [(32, 32), (64, 96), (40, 56), (128, 128), (33, 47)]
        counts = {tok.encode(torch.rand(1, 3, *hw)).ids.shape[1] for hw in sizes}
        layouts = {tok.layout_for(*hw) for hw in [(32, 32), (128, 128)]}
        assert counts == {num_tokens} and len(layouts) == 1


def test_vae_encode_returns_the_mean_and_sampling_differs():
    tok = tokbench.create("vae:size=tiny").eval()
    x = torch.rand(1, 3, 33, 47)
    mean_a, mean_b = tok.encode(x).latents, tok.encode(x).latents
    assert torch.equal(mean_a, mean_b)
    with torch.no_grad():
        post = tok.posterior(F.pad(x, (0, 1, 0, 3), mode="reflect"))
    assert torch.equal(post.mean, mean_a)
    sampled = tok.encode(x, sample=True, generator=torch.Generator().manual_seed(0))
    again = tok.encode(x, sample=True, generator=torch.Generator().manual_seed(0)).latents
    assert sampled.latents.shape == mean_a.shape and sampled.image_size == (33, 47)
    assert not torch.equal(sampled.latents, mean_a) and torch.equal(sampled.latents, again)
    # The noise is scaled by the posterior's std: the standardized deviation is ~N(0, 1).
    noise = (sampled.latents - post.mean) / post.std
    assert abs(float(noise.std()) - 1) < 0.2
    assert tok.decode(sampled).shape == x.shape


def test_vae_kl_term_is_on_the_per_pixel_scale():
    tok = tokbench.create("vae:size=tiny,kl_weight=1.0").train()
    x = torch.rand(2, 3, 32, 32)
    torch.manual_seed(0)
    out = tok.autoencode(x)
    kl_per_image = float(out.stats["kl_per_image"])
    assert kl_per_image > 0
    assert float(out.losses["kl"].detach()) == pytest.approx(kl_per_image / (3 * 32 * 32), rel=1e-5)


def test_unknown_size_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        tokbench.create("vq:size=huge")
    with pytest.raises(ValueError, match="bad options for tokenizer 'vq'"):
        tokbench.create("vq:size=tiny,no_such_option=1")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_tiny_small_base_variants_buildable_on_meta(family):
    variants = registry.variants(family)
    assert {"tiny", "small", "base"} <= set(variants)
    for options in variants.values():
        with torch.device("meta"):
            tok = registry.get_factory(family)(**options)
        assert tok.family == family and tok.tokens_per_image(256, 256) > 0


@pytest.mark.parametrize("spec, tokens, vocab, params", [
    ("vq:size=small", 256, 16384, (71e6, 73e6)),           # LlamaGen VQ-16, ~72M
    ("residual_scale:size=base", 680, 4096, (100e6, 115e6)),  # VAR VQVAE, 680 tokens
    ("holistic_1d:size=small", 128, 4096, (30e6, 80e6)),   # TiTok-S-128
    ("holistic_1d:size=base", 64, 4096, (150e6, 200e6)),   # TiTok-B-64
    ("vae:size=small", 32 * 32, None, (83e6, 84e6)),       # SD KL-f8 VAE, 83.7M
])
def test_published_scale_configs(spec, tokens, vocab, params):
    with torch.device("meta"):
        tok = tokbench.create(spec)
    layout = tok.layout_for(256, 256)
    assert layout.num_tokens == tokens and layout.vocab_size == vocab
    assert params[0] <= tok.num_parameters() <= params[1]
