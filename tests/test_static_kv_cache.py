"""The generators' static KV cache (preallocated, written in place, masked to the filled
length: the same shapes at every step) and the opt-in compilation of the decode step."""
import pytest
import torch

import tokbench
import tokbench.generation.blocks as blocks
from tokbench.generation.compile import compile_sampling, step_compile_options
from tokbench.generation.continuous import ContinuousGPT
from tokbench.generation.gpt import TokenGPT
from tokbench.generation.next_scale import NextScaleGPT
from helpers import one_thread  # noqa: F401  (autouse fixture)


def _gpt():
    torch.manual_seed(0)
    return TokenGPT(40, 16, num_classes=3, width=32, depth=2, heads=4, grid=(4, 4)).eval()


def _continuous():
    torch.manual_seed(0)
    model = ContinuousGPT(4, 16, num_classes=3, width=32, depth=2, heads=4, grid=(4, 4), head_width=32,
                          head_depth=2).eval()
    for p in model.head.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model


@pytest.fixture(scope="module")
def next_scale():
    torch.manual_seed(0)
    tok = tokbench.create("residual_scale:size=tiny").eval()
    layout = tok.layout_for(64, 64)
    model = NextScaleGPT(layout.vocab_size, layout.scale_shapes(), tok.code_dim, num_classes=3, width=32, depth=2,
                         heads=4).eval()
    return model, tok, layout


def _draw(model, kind, next_scale=None, seed=3, **kw):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 2, 1])
    if kind == "next_scale":
        model, tok, layout = next_scale
        return model.generate(tok, layout, labels, cfg=2.0, temperature=1.3, generator=g, **kw)
    if kind == "mar":
        return model.generate(labels, cfg=2.0, diffusion_steps=5, generator=g, **kw)
    return model.generate(labels, cfg=2.0, top_k=20, temperature=1.3, generator=g, **kw)


def _record_attention(monkeypatch):
    """(key shape, key buffer address) of every cached attention call."""
    seen = []
    real = blocks.F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False):
        seen.append((tuple(k.shape), k.data_ptr(), None if attn_mask is None else tuple(attn_mask.shape)))
        return real(q, k, v, attn_mask=attn_mask, is_causal=is_causal)

    monkeypatch.setattr(blocks.F, "scaled_dot_product_attention", spy)
    return seen


@pytest.mark.parametrize("kind", ["gpt", "mar", "next_scale"])
def test_every_cached_step_reads_the_same_preallocated_buffers(monkeypatch, kind, next_scale):
    model = next_scale[0] if kind == "next_scale" else (_gpt() if kind == "gpt" else _continuous())
    seen = _record_attention(monkeypatch)
    _draw(model, kind, next_scale)
    depth = len(model.blocks)
    assert len(seen) == depth * (len(model.scale_shapes) if kind == "next_scale" else model.seq_len)
    # 3 samples + their unconditional twins (CFG), all positions, from the first step on
    assert {shape for shape, _, _ in seen} == {(6, 4, model.seq_len, 8)}
    for layer in range(depth):  # written in place: one buffer per layer for the whole run
        assert len({ptr for _, ptr, _ in seen[layer::depth]}) == 1
    assert all(mask is not None and mask[-1] == model.seq_len for _, _, mask in seen)


@pytest.mark.parametrize("kind", ["gpt", "next_scale"])
def test_static_cache_samples_are_token_identical_to_recomputation(kind, next_scale):
    model = next_scale[0] if kind == "next_scale" else _gpt()
    cached = _draw(model, kind, next_scale, use_cache=True)
    assert torch.equal(cached, _draw(model, kind, next_scale, use_cache=False))
    assert not torch.equal(cached, _draw(model, kind, next_scale, seed=4))  # the seed matters


def test_static_cache_latents_match_recomputation_for_the_continuous_generator():
    model = _continuous()
    cached = _draw(model, "mar", use_cache=True)
    assert torch.allclose(cached, _draw(model, "mar", use_cache=False), atol=1e-4)


def test_masked_keys_never_leak_stale_values():
    # A cache holding another batch's keys and values where this one has not written yet:
    # the mask must hide them, so the samples stay those of a fresh cache.
    model = _gpt()
    fresh = _draw(model, "gpt")
    real_new_cache = model.new_cache

    def dirty_cache(batch, device):
        cache = real_new_cache(batch, device)
        for t in cache.keys + cache.values:
            t.normal_(std=100.0)
        return cache

    model.new_cache = dirty_cache
    assert torch.equal(_draw(model, "gpt"), fresh)


@pytest.mark.parametrize("kind", ["gpt", "mar", "next_scale"])
def test_the_compiled_decode_step_traces_whole_and_samples_the_same(kind, next_scale):
    # fullgraph=True: a graph break anywhere in the step (which would keep CUDA graphs from
    # capturing it) is an error. The "eager" backend traces without building kernels (fast on CPU).
    model = next_scale[0] if kind == "next_scale" else (_gpt() if kind == "gpt" else _continuous())
    reference = _draw(model, kind, next_scale)
    compile_sampling(model, "cpu", backend="eager")
    try:
        out = _draw(model, kind, next_scale)
    finally:
        del model.cached_step  # back to the class's eager method (the fixture is shared)
    if kind == "mar":
        assert torch.allclose(out, reference, atol=1e-5)
    else:
        assert torch.equal(out, reference)


def test_compile_options_use_cuda_graphs_only_on_cuda():
    assert step_compile_options("cuda")["mode"] == "reduce-overhead"
    assert "mode" not in step_compile_options("cpu")
    assert "mode" not in step_compile_options("cuda", backend="eager")
    assert step_compile_options("cpu")["fullgraph"] is True


def test_gen_fit_and_gen_sample_take_the_compile_flag():
    from tokbench.generation.commands.fit import translate_arguments
    from tokbench.generation.commands.sample import register
    import argparse

    argv, resume = translate_arguments(["--compile", "--trainer.max_steps", "3"])
    assert argv == ["--model.compile", "true", "--trainer.max_steps", "3"] and not resume
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["sample", "--generator", "g", "--out", "o", "--compile"])
    assert args.compile is True
    assert parser.parse_args(["sample", "--generator", "g", "--out", "o"]).compile is False


def test_compiled_training_keeps_parameter_names_and_leaves_the_ema_eager():
    from tokbench.generation.module import GeneratorModule
    from tokbench.tokens import TokenLayout

    layout = TokenLayout("grid", (4, 4), vocab_size=64)
    info = {"layout": layout.to_dict(), "num_classes": 2, "classes": None, "tokenizer": {"spec": None, "sha256": None}}
    eager = GeneratorModule(info=info, arch="gpt", preset="tiny")
    compiled = GeneratorModule(info=info, arch="gpt", preset="tiny", compile=True)
    assert compiled.model._compiled_call_impl is not None and eager.model._compiled_call_impl is None
    assert compiled.ema._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints unchanged


def test_a_bare_cache_fed_step_by_step_gives_the_full_forward_logits():
    # `KVCache()` handed to `_run` is allocated on the first step to the generator's length.
    from tokbench.generation.blocks import KVCache

    model = _gpt()
    ids = torch.randint(0, 40, (2, 16), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([1, 2])
    full = model(ids, labels)
    cache = KVCache()
    steps = [model._run(model.class_embed(labels)[:, None], 0, cache)]
    steps += [model._run(model.token_embed(ids[:, t - 1:t]), t, cache) for t in range(1, 16)]
    assert cache.max_len == 16 and cache.keys[0].shape == (2, 4, 16, 8)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
