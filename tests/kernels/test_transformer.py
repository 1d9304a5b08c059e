"""kernels.transformer: SDPA attention against explicit softmax with a materialised mask, RoPE, the model."""

import math

import pytest
import torch

from kernels.transformer import RMSNorm, TinyGPT, apply_rope, naive_attention, rope_angles
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
