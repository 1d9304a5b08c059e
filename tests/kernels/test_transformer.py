"""kernels.transformer: SDPA attention against explicit softmax with a materialised mask, RoPE, the model."""

import math

import pytest
import torch

from kernels.transformer import (Block, RMSNorm, TinyGPT, apply_rope, band_mask, bench_cases, generate_greedy, naive_attention,
                                 rope_angles)
from kernels.ngram import OverEncoding


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T", [1, 7, 33])
def test_model_sdpa_equals_naive_attention(causal, T):
    torch.manual_seed(T)
    model = TinyGPT(50, 32, layers=2, heads=4)
    tokens = torch.randint(0, 50, (3, T))
    torch.testing.assert_close(model(tokens, causal=causal), model(tokens, causal=causal, naive=True), rtol=1e-5, atol=1e-5)


def test_naive_attention_is_causal_and_matches_a_loop():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 1, 2, 5, 8).unbind(0)
    out = naive_attention(q, k, v, causal=True)
    for t in range(5):
        w = torch.softmax(q[..., t:t + 1, :] @ k[..., : t + 1, :].transpose(-2, -1) / math.sqrt(8), dim=-1)
        torch.testing.assert_close(out[..., t:t + 1, :], w @ v[..., : t + 1, :])


def test_causal_model_ignores_the_future():
    torch.manual_seed(1)
    model = TinyGPT(40, 16, 1, 2)
    a = torch.randint(0, 40, (2, 10))
    b = a.clone()
    b[:, 6:] = (b[:, 6:] + 1) % 40
    torch.testing.assert_close(model(a)[:, :6], model(b)[:, :6])


def test_rope_is_a_rotation_that_depends_on_relative_position():
    torch.manual_seed(2)
    q, k = torch.randn(2, 1, 1, 1, 16).unbind(0)
    def score(pq, pk):
        cq, sq = rope_angles(torch.tensor([pq]), 16)
        ck, sk = rope_angles(torch.tensor([pk]), 16)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())
    assert score(3, 1) == pytest.approx(score(10, 8), rel=1e-5)
    c, s = rope_angles(torch.tensor([5]), 16)
    assert float(apply_rope(q, c, s).norm()) == pytest.approx(float(q.norm()), rel=1e-6)


def test_rmsnorm_unit_rms():
    x = torch.randn(4, 10) * 7
    y = RMSNorm(10)(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4), rtol=1e-4, atol=1e-4)


def test_head_is_tied_to_the_token_table_also_under_over_encoding():
    plain = TinyGPT(30, 16, 1, 2)
    assert plain.head_weight is plain.embed.weight
    oe = TinyGPT(256, 16, 1, 2, embed=OverEncoding(256, 16, n=3, k=1, m=101))
    assert oe.head_weight is oe.embed.wte.weight
    # the n-gram projection counts as non-embedding; the tables do not
    assert oe.non_embedding_parameters() - plain.non_embedding_parameters() == 16 * 16 + 16 + 0 * 1


@pytest.mark.parametrize("call, match", [
    (lambda: TinyGPT(0, 16, 1, 2), "vocab"),
    (lambda: TinyGPT(30, 16, 1, 3), "heads"),
    (lambda: TinyGPT(30, 16, 1, 2)(torch.zeros(2, 3)), "tokens"),
    (lambda: TinyGPT(30, 16, 1, 2, embed=torch.nn.Embedding(31, 16)), "embed"),
    (lambda: rope_angles(torch.arange(4), 7), "head_dim"),
    (lambda: rope_angles(torch.zeros(4), 8), "positions"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("kind", ["static", "cat"])
@pytest.mark.parametrize("seed, prompt_len, new", [(0, 1, 12), (1, 5, 7), (2, 9, 1)])
def test_decode_logits_equal_full_recompute(kind, seed, prompt_len, new):
    torch.manual_seed(seed)
    model = TinyGPT(37, 32, layers=2, heads=4).eval()
    tokens = torch.randint(0, 37, (3, prompt_len + new))
    full = model(tokens)
    cache = model.new_cache(3, prompt_len + new, kind=kind)
    with torch.no_grad():
        parts = [model(tokens[:, :prompt_len], cache=cache)]
        for t in range(prompt_len, prompt_len + new):
            parts.append(model(tokens[:, t:t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.pos == prompt_len + new


def test_chunked_prefill_into_a_cache_uses_an_offset_causal_mask():
    torch.manual_seed(3)
    model = TinyGPT(20, 16, 2, 2).eval()
    tokens = torch.randint(0, 20, (2, 11))
    cache = model.new_cache(2, 11)
    with torch.no_grad():
        out = torch.cat([model(tokens[:, :4], cache=cache), model(tokens[:, 4:9], cache=cache),
                         model(tokens[:, 9:], cache=cache)], dim=1)
    torch.testing.assert_close(out, model(tokens), rtol=1e-5, atol=1e-5)


def test_static_cache_writes_in_place():
    model = TinyGPT(20, 16, 1, 2).eval()
    cache = model.new_cache(2, 6)
    buffer = cache.k[0].data_ptr()
    with torch.no_grad():
        model(torch.zeros(2, 3, dtype=torch.int64), cache=cache)
        model(torch.zeros(2, 1, dtype=torch.int64), cache=cache)
    assert cache.k[0].data_ptr() == buffer and cache.k[0][:, :, 4:].abs().sum() == 0


def test_greedy_generation_identical_with_and_without_cache():
    torch.manual_seed(4)
    model = TinyGPT(30, 32, 2, 4).eval()
    prompt = torch.randint(0, 30, (5, 6))
    outs = [generate_greedy(model, prompt, 20, cache=c) for c in ("none", "cat", "static")]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    assert torch.equal(outs[0][:, :6], prompt) and outs[0].shape == (5, 26)


@pytest.mark.parametrize("call, match", [
    (lambda m: m(torch.zeros(2, 5, dtype=torch.int64), cache=m.new_cache(2, 4)), "exceeds the cache's max_len"),
    (lambda m: m(torch.zeros(3, 1, dtype=torch.int64), cache=m.new_cache(2, 4)), "batch 3 does not match"),
    (lambda m: m(torch.zeros(2, 1, dtype=torch.int64), causal=False, cache=m.new_cache(2, 4)), "causal"),
    (lambda m: m.new_cache(2, 4, kind="paged"), "kind"),
    (lambda m: m.new_cache(0, 4), "batch"),
    (lambda m: generate_greedy(m, torch.zeros(2, 0, dtype=torch.int64), 3), "prompt"),
    (lambda m: generate_greedy(m, torch.zeros(2, 2, dtype=torch.int64), -1), "steps"),
    (lambda m: generate_greedy(m, torch.zeros(2, 2, dtype=torch.int64), 2, cache="paged"), "cache"),
])
def test_cache_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(TinyGPT(10, 16, 1, 2))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 3, 40])
def test_band_attention_equals_a_masked_loop_and_sdpa(causal, window):
    """Eq. 5: position i sees keys j with |i - j| <= w (and j <= i if causal); SDPA path == naive path."""
    g = torch.Generator().manual_seed(window)
    q, k, v = (torch.randn(2, 3, 11, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out = naive_attention(q, k, v, causal, window)
    ref = torch.empty_like(out)
    for i in range(11):
        js = [j for j in range(11) if abs(i - j) <= window and (not causal or j <= i)]
        s = (q[..., i:i + 1, :] @ k[..., js, :].transpose(-2, -1)) / math.sqrt(8)
        ref[..., i, :] = (torch.softmax(s, -1) @ v[..., js, :])[..., 0, :]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    mask = band_mask(11, window, causal)
    torch.testing.assert_close(torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask), ref)
    if window >= 10:   # a band wider than the sequence is no mask at all
        torch.testing.assert_close(out, naive_attention(q, k, v, causal))


def test_windowed_block_is_local_and_translation_invariant():
    """A band of w per layer: changing token 0 cannot reach position > w; SDPA and naive paths agree."""
    torch.manual_seed(0)
    block = Block(16, 2).double()
    x = torch.randn(1, 12, 16, dtype=torch.float64)
    pos = torch.arange(12)
    y = block(x, pos, causal=False, window=2)
    torch.testing.assert_close(y, block(x, pos, causal=False, naive=True, window=2))
    x2 = x.clone()
    x2[:, 0] += 1.0
    y2 = block(x2, pos, causal=False, window=2)
    assert torch.equal(y[:, 3:], y2[:, 3:]) and not torch.allclose(y[:, :3], y2[:, :3])


@pytest.mark.parametrize("call, match", [
    (lambda: band_mask(5, 0, False), "window"),
    (lambda: band_mask(0, 2, False), "length"),
    (lambda: naive_attention(torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4), False, 2),
     "window"),
])
def test_band_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_window_with_a_cache_is_refused():
    torch.manual_seed(0)
    block = Block(16, 2)
    model = TinyGPT(8, 16, 1, 2)
    cache = model.new_cache(1, 8)
    with pytest.raises(ValueError, match="window"):
        block(torch.randn(1, 2, 16), torch.arange(2), causal=True, cache=cache, window=2)


def test_bench_cases_leave_the_global_torch_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    bench_cases(quick=True)
    assert torch.equal(torch.get_rng_state(), before)


# --- the Llama-style variant (WebLLM chapter) ---------------------------------------------------------------

from kernels.transformer import SwiGLU, TiedEmbedding, TinyLlama  # noqa: E402


def test_swiglu_is_down_of_silu_gate_times_up():
    torch.manual_seed(3)
    mlp = SwiGLU(8, 12)
    x = torch.randn(2, 5, 8)
    g, u = x @ mlp.gate.weight.t(), x @ mlp.up.weight.t()
    torch.testing.assert_close(mlp(x), (g * torch.sigmoid(g) * u) @ mlp.down.weight.t())
    assert all(m.bias is None for m in (mlp.gate, mlp.up, mlp.down))


def test_tinyllama_head_is_the_token_table():
    model = TinyLlama(30, 16, 2, 2, hidden=24)
    assert isinstance(model.embed, TiedEmbedding) and all(isinstance(b.mlp, SwiGLU) for b in model.blocks)
    h = torch.randn(3, 16)
    torch.testing.assert_close(model.embed.logits(h), h @ model.embed.weight.t())
    assert sum(p.numel() for p in model.parameters()) == 30 * 16 + 2 * (16 * 48 + 16 * 16 + 3 * 16 * 24 + 2 * 16) + 16


@pytest.mark.parametrize("kind", ["static", "cat"])
@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_tinyllama_chunked_prefill_and_decode_equal_full_recompute(kind, chunk):
    torch.manual_seed(chunk)
    model = TinyLlama(40, 32, 2, 4).eval()
    seq = torch.randint(0, 40, (2, 15))
    cache = model.new_cache(2, 15, kind=kind)
    with torch.no_grad():
        parts = [model(seq[:, i:i + chunk], cache=cache) for i in range(0, 15, chunk)]
        torch.testing.assert_close(torch.cat(parts, 1), model(seq), rtol=1e-5, atol=1e-5)


def test_tinyllama_greedy_identical_with_and_without_cache():
    torch.manual_seed(4)
    model = TinyLlama(40, 32, 2, 4).eval()
    prompt = torch.randint(0, 40, (3, 5))
    ref = generate_greedy(model, prompt, 12, cache="none")
    for kind in ("static", "cat"):
        assert torch.equal(generate_greedy(model, prompt, 12, cache=kind), ref)


@pytest.mark.parametrize("call, match", [
    (lambda: TinyLlama(0, 16, 1, 2), "vocab"),
    (lambda: TinyLlama(30, 16, 1, 2, hidden=0), "hidden"),
    (lambda: TinyLlama(30, 16, 1, 3), "heads"),
    (lambda: TinyLlama(30, 16, 1, 2)(torch.zeros(2, 3)), "tokens"),
    (lambda: TinyLlama(30, 16, 1, 2)(torch.zeros(2, 3, dtype=torch.int64), causal=False,
                                     cache=TinyLlama(30, 16, 1, 2).new_cache(2, 4)), "cache"),
    (lambda: TinyLlama(30, 16, 1, 2).new_cache(1, 4, kind="paged"), "kind"),
    (lambda: SwiGLU(0, 4), "dim"),
])
def test_tinyllama_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
