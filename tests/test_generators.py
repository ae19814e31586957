"""The AR generators: KV-cache sampling, sampling filters, class conditioning with CFG, VAR's
next-scale contract with the tokenizer."""
import math

import pytest
import torch
import torch.nn.functional as F

import tokbench
from tokbench.generation.gpt import TokenGPT
from tokbench.generation.next_scale import NextScaleGPT, block_causal_mask, cfg_at_scale
from tokbench.generation.presets import build_generator
from tokbench.generation.sampling import filter_logits, guided
from tokbench.generation.training import fit_in_memory
from tokbench.tokens import TokenLayout
from helpers import one_thread  # noqa: F401  (autouse fixture)


def _same_draws(generate, **kwargs):
    a = generate(generator=torch.Generator().manual_seed(3), use_cache=True, **kwargs)
    b = generate(generator=torch.Generator().manual_seed(3), use_cache=False, **kwargs)
    return a, b


@pytest.mark.parametrize("grid", [None, (4, 4)], ids=["rope1d", "rope2d"])
@pytest.mark.parametrize("cfg,top_p", [(1.0, None), (3.0, 0.8)], ids=["plain", "cfg-top_p"])
def test_gpt_kv_cache_sampling_equals_full_recomputation(grid, cfg, top_p):
    torch.manual_seed(0)
    model = TokenGPT(40, 16, num_classes=3, width=32, depth=2, heads=4, grid=grid).eval()
    a, b = _same_draws(model.generate, labels_B=torch.tensor([0, 1, 2, 1]), cfg=cfg, top_p=top_p, temperature=1.5)
    assert a.shape == (4, 16)
    assert torch.equal(a, b)


@pytest.mark.parametrize("cfg,top_p", [(1.0, None), (3.0, 0.8)], ids=["plain", "cfg-top_p"])
def test_next_scale_kv_cache_sampling_equals_full_recomputation(cfg, top_p):
    torch.manual_seed(0)
    tok = tokbench.create("residual_scale:size=tiny").eval()
    layout = tok.layout_for(64, 64)
    model = NextScaleGPT(layout.vocab_size, layout.scale_shapes(), tok.code_dim, num_classes=3, width=32, depth=2,
                         heads=4).eval()
    a, b = _same_draws(lambda **kw: model.generate(tok, layout, **kw), labels_B=torch.tensor([0, 2, 1]), cfg=cfg,
                       top_p=top_p, temperature=1.5)
    assert a.shape == (3, layout.num_tokens)
    assert torch.equal(a, b)


def test_top_k_and_top_p_keep_exactly_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.05, 0.2, 0.15, 0.1]]))
    kept = lambda out: torch.isfinite(out[0]).nonzero().flatten().tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [0, 2]
    assert kept(filter_logits(logits, top_k=0)) == [0, 1, 2, 3, 4]
    # Sorted: 0.5, 0.2, 0.15, 0.1, 0.05; the cumulative mass before each: 0, 0.5, 0.7, 0.85, 0.95.
    assert kept(filter_logits(logits, top_p=0.7)) == [0, 2]  # 0.5 + 0.2 reaches 0.7
    assert kept(filter_logits(logits, top_p=0.71)) == [0, 2, 3]
    assert kept(filter_logits(logits, top_p=0.01)) == [0]  # the most likely token always stays
    assert kept(filter_logits(logits, top_k=3, top_p=0.6)) == [0, 2]
    # Kept logits are unchanged; guidance is uncond + s * (cond - uncond).
    assert torch.equal(filter_logits(logits, top_k=2)[0, [0, 2]], logits[0, [0, 2]])
    cond, uncond = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert torch.equal(guided(torch.cat([cond, uncond]), 3.0), torch.tensor([[4.0, -2.0]]))


def test_gpt_is_causal_and_reads_its_class():
    torch.manual_seed(0)
    model = TokenGPT(50, 12, num_classes=4, width=32, depth=2, heads=2).eval()
    ids = torch.randint(0, 50, (1, 12))
    changed = ids.clone()
    changed[0, 5] = (ids[0, 5] + 1) % 50
    a, b = model(ids, torch.tensor([1])), model(changed, torch.tensor([1]))
    assert torch.equal(a[:, :6], b[:, :6]), "positions up to 5 must not see token 5"
    assert not torch.allclose(a[:, 6], b[:, 6]), "position 6 must see token 5"
    assert not torch.allclose(model(ids, torch.tensor([2]))[:, 0], a[:, 0]), "the first token must depend on the class"


def test_a_uniform_generator_costs_exactly_the_raw_bits():
    model = TokenGPT(vocab_size=256, seq_len=20, width=32, depth=1, heads=2)
    torch.nn.init.zeros_(model.head.weight)  # every token equally likely
    assert torch.allclose(model.nll_bits(torch.randint(0, 256, (3, 20))), torch.full((3,), 20 * 8.0), atol=1e-3)


def test_block_causal_mask_lets_a_map_see_the_maps_before_it_and_itself():
    shapes = [(1, 1), (2, 2), (3, 3)]
    mask = block_causal_mask(shapes)
    level = [0] + [1] * 4 + [2] * 9
    expected = torch.tensor([[level[j] <= level[i] for j in range(14)] for i in range(14)])
    assert torch.equal(mask, expected)
    # and the model honours it: changing map 2's inputs leaves the logits of maps 0-1 as they were.
    torch.manual_seed(0)
    model = NextScaleGPT(30, shapes, code_dim=8, width=32, depth=2, heads=2).eval()
    inputs = torch.randn(1, 13, 8)
    changed = inputs.clone()
    changed[:, 4:] += 1  # positions of map 2 (inputs start at map 1)
    a, b = model(inputs), model(changed)
    assert torch.equal(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_teacher_forcing_inputs_are_the_tokenizers_accumulated_maps():
    torch.manual_seed(0)
    tok = tokbench.create("residual_scale:size=tiny").eval()
    tokens = tok.encode(torch.rand(2, 3, 64, 64))
    inputs = tok.next_scale_inputs(tokens.ids, tokens.layout)
    maps, shapes = tokens.ids_per_scale(), tokens.layout.scale_shapes()
    start = 0
    for k in range(1, len(shapes)):
        f_hat = tok.quantize.decode(maps, hw=tokens.layout.grid, num_scales=k)  # maps < k, on the full grid
        expected = F.interpolate(f_hat, size=shapes[k], mode="area").flatten(2).transpose(1, 2)
        n = shapes[k][0] * shapes[k][1]
        assert torch.allclose(inputs[:, start:start + n], expected, atol=1e-6), k
        start += n
    assert start == inputs.shape[1] == tokens.layout.num_tokens - 1
    # while sampling, next_scale_step builds the same inputs map by map
    f_hat, got = None, []
    for si, (h, w) in enumerate(shapes):
        f_hat, nxt = tok.next_scale_step(f_hat, maps[si], si, tokens.layout)
        if nxt is not None:
            got.append(nxt)
    assert torch.allclose(torch.cat(got, dim=1), inputs, atol=1e-6)
    assert torch.allclose(f_hat, tok.quantize.decode(maps, hw=tokens.layout.grid), atol=1e-6)


def _class_patterns(num_classes: int, vocab: int, length: int) -> torch.Tensor:
    """Class c's sequence: a fixed random pattern per class."""
    return torch.randint(0, vocab, (num_classes, length), generator=torch.Generator().manual_seed(7))


def _noisy_copies(patterns: torch.Tensor, per_class: int, vocab: int, noise: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(patterns)).repeat_interleave(per_class)
    ids = patterns[labels].clone()
    flip = torch.rand(ids.shape, generator=g) < noise
    ids[flip] = torch.randint(0, vocab, (int(flip.sum()),), generator=g)
    return ids, labels


def _follows(samples: torch.Tensor, labels: torch.Tensor, patterns: torch.Tensor) -> float:
    """Share of samples whose nearest class pattern (most tokens in common) is their own class's."""
    agreement_NC = (samples[:, None, :] == patterns[None]).float().sum(-1)
    return (agreement_NC.argmax(1) == labels).float().mean().item()


def test_class_conditional_gpt_follows_the_class_with_guidance():
    vocab, length, classes = 16, 12, 4
    patterns = _class_patterns(classes, vocab, length)
    ids, labels = _noisy_copies(patterns, 64, vocab, noise=0.15, seed=0)
    layout = TokenLayout("sequence", (length,), vocab_size=vocab)
    module = fit_in_memory(ids, layout, labels_N=labels, num_classes=classes, steps=250, batch_size=32, lr=3e-3,
                           ema_decay=0.9)
    want = torch.arange(classes).repeat(16)
    samples = module.ema.generate(want, cfg=3.0, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert _follows(samples, want, patterns) >= 0.9


def test_class_conditional_next_scale_generator_follows_the_class_with_guidance():
    torch.manual_seed(0)
    tok = tokbench.create("residual_scale:size=tiny").eval()
    layout = tok.layout_for(32, 32)  # maps 1, 2, 4 (4x4 grid): 21 tokens
    classes, vocab = 4, layout.vocab_size
    patterns = _class_patterns(classes, vocab, layout.num_tokens)
    ids, labels = _noisy_copies(patterns, 64, vocab, noise=0.15, seed=0)
    module = fit_in_memory(ids, layout, labels_N=labels, num_classes=classes, arch="next_scale", steps=250,
                           batch_size=32, lr=3e-3, ema_decay=0.9, tokenizer=tok)
    want = torch.arange(classes).repeat(16)
    samples = module.ema.generate(tok, layout, want, cfg=3.0, cfg_schedule="constant", temperature=0.8,
                                  generator=torch.Generator().manual_seed(0))
    assert _follows(samples, want, patterns) >= 0.9


def test_presets_build_the_published_sizes():
    # LlamaGen GPT-B on a 16,384-code tokenizer, 256 tokens, 1,000 classes: 111M parameters.
    layout = TokenLayout("grid", (16, 16), vocab_size=16384)
    with torch.device("meta"):
        gpt_b = build_generator("gpt", layout, 1000, "B")
        gpt_l = build_generator("gpt", layout, 1000, "L")
    params = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    assert 110 <= params(gpt_b) <= 112, params(gpt_b)
    assert 340 <= params(gpt_l) <= 346, params(gpt_l)
    scales = TokenLayout("scales", (16, 16), vocab_size=4096, scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16))
    with torch.device("meta"):
        d16 = build_generator("next_scale", scales, 1000, "d16", code_dim=32)
    assert 300 <= params(d16) <= 320, params(d16)  # VAR-d16: 310M


def test_bad_generator_settings_are_clear_errors():
    layout = TokenLayout("grid", (4, 4), vocab_size=10)
    with pytest.raises(ValueError, match="unknown generator preset 'XL'"):
        build_generator("gpt", layout, 0, "XL")
    with pytest.raises(ValueError, match="needs a 'scales' layout"):
        build_generator("next_scale", layout, 0, "tiny", code_dim=4)
    with pytest.raises(ValueError, match="continuous latents"):
        build_generator("gpt", TokenLayout("grid", (4, 4), latent_channels=4), 0)
    model = TokenGPT(10, 16, num_classes=2, width=16, depth=1, heads=2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        model.generate(torch.tensor([5]))
    with pytest.raises(ValueError, match="top_p must be in"):
        model.generate(torch.tensor([1]), top_p=1.5)
    with pytest.raises(ValueError, match="guidance scale must be a finite number >= 1"):
        model.generate(torch.tensor([1]), cfg=0.5)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 10\)"):
        fit_in_memory(torch.full((4, 16), 11), layout, steps=1)
    assert cfg_at_scale(2.5, 0, 10, "linear") == 1 and cfg_at_scale(2.5, 9, 10, "linear") == 2.5


def test_the_quick_fit_trains_on_the_device_it_is_given():
    from tokbench.generation.training import lightning_device

    assert lightning_device("cuda:1") == {"accelerator": "gpu", "devices": [1]}  # not GPU 0
    assert lightning_device("cpu") == {"accelerator": "cpu", "devices": 1}
