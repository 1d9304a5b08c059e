"""kernels.permuted_inference: the plaintext encoder against torch's own attention and LayerNorm, the permuted
weights against eq-lin, the protocol's logits against plaintext on random models, the channel's counts, and
the view test: on a small random model run through the protocol, no entry of P1's view (received, computed, or
derived with its public weights) equals an unpermuted activation of the plaintext run under any statistic a
column permutation changes, except those ``revealed_by_design`` lists; those do; every opened or computed
entry shares the row invariants (sorted rows, row norms, row Gram) with its own activation; masked entries
share nothing."""

import math

import pytest
import torch
import torch.nn.functional as F

from kernels import mpc
from kernels import permuted_inference as pinf


def gen(seed):
    return torch.Generator().manual_seed(seed)


def random_model(seed, d=16, heads=2, dff=32, layers=2, vocab=12, seq=8, qk_gain=2.5):
    """Random encoder weights with non-trivial LayerNorm parameters, peaked attention (gain on W_Q, W_K) and
    orthogonal W_V, W_O (well conditioned, so that P1's least-squares solve for P is not swamped by the
    fixed-point noise; the chapter measures how often it succeeds on a trained model)."""
    g = gen(seed)
    r = lambda *s, std=1.0: torch.randn(*s, generator=g, dtype=torch.float64) * std
    W = {"tok": r(vocab, d), "pos": r(seq, d), "ln_e_g": 1 + 0.3 * r(d), "ln_e_b": 0.3 * r(d),
         "Wc": r(d, 2, std=d ** -0.5), "bc": 0.1 * r(2)}
    for l in range(layers):
        for c in "qkvo":
            w = r(d, d, std=qk_gain * d ** -0.5) if c in "qk" else torch.linalg.qr(r(d, d))[0]
            W[f"W{c}{l}"], W[f"b{c}{l}"] = w, 0.1 * r(d)
        W[f"W1{l}"], W[f"b1{l}"] = r(d, dff, std=d ** -0.5), 0.1 * r(dff)
        W[f"W2{l}"], W[f"b2{l}"] = r(dff, d, std=dff ** -0.5), 0.1 * r(d)
        for i in (1, 2):
            W[f"ln{i}_g{l}"], W[f"ln{i}_b{l}"] = 1 + 0.3 * r(d), 0.3 * r(d)
    return W


def run(W, heads, tokens, seed=0, keep_masked=False):
    keys, model = pinf.centaur_setup(W, heads, gen(seed + 1))
    chan = mpc.Channel(keep_masked=keep_masked)
    logits, chan = pinf.centaur_forward(model, tokens, [gen(seed + 10 + i) for i in range(4)], chan)
    return keys, model, logits, chan


def tokens_for(W, batch, seed):
    return torch.randint(0, W["tok"].shape[0], (batch, W["pos"].shape[0]), generator=gen(seed + 100))


# ------------------------------------------------------------------------------------------- plaintext
def reference_forward(W, tokens, heads):
    """The same encoder from torch's scaled_dot_product_attention and F.layer_norm."""
    d = W["tok"].shape[1]
    ln = lambda x, g, b: F.layer_norm(x, (d,), g, b, eps=pinf.LN_EPS)
    x = ln(W["tok"][tokens] + W["pos"][: tokens.shape[1]], W["ln_e_g"], W["ln_e_b"])
    for l in range(pinf._layers(W)):
        q, k, v = (pinf.split_heads(x @ W[f"W{c}{l}"] + W[f"b{c}{l}"], heads) for c in "qkv")
        a = pinf.merge_heads(F.scaled_dot_product_attention(q, k, v)) @ W[f"Wo{l}"] + W[f"bo{l}"]
        x = ln(x + a, W[f"ln1_g{l}"], W[f"ln1_b{l}"])
        x = ln(x + F.gelu(x @ W[f"W1{l}"] + W[f"b1{l}"]) @ W[f"W2{l}"] + W[f"b2{l}"], W[f"ln2_g{l}"], W[f"ln2_b{l}"])
    return x[:, 0] @ W["Wc"] + W["bc"]


@pytest.mark.parametrize("seed", range(3))
def test_plain_forward_matches_torch_attention_and_layer_norm(seed):
    W = random_model(seed)
    tokens = tokens_for(W, 5, seed)
    rec = {}
    out = pinf.plain_forward(W, tokens, 2, rec)
    torch.testing.assert_close(out, reference_forward(W, tokens, 2))
    torch.testing.assert_close(rec["probs0"].sum(-1), torch.ones(5, 2, 8, dtype=torch.float64))
    assert rec["logits"] is out and rec["scores1"].shape == (5, 2, 8, 8)


# ---------------------------------------------------------------------------------------- permutations
def test_weights_are_permuted_on_both_sides_as_eq_lin_says():
    W = random_model(0)
    keys, model = pinf.centaur_setup(W, 2, gen(1))
    x = torch.randn(3, 16, dtype=torch.float64, generator=gen(2))
    pub = {k: mpc.decode(v) if v.dtype == torch.int64 else v for k, v in model.pub.items()}
    pi, pq, pk, pv, p1 = keys.pi, keys.pi_q[0], keys.pi_k[0], keys.pi_v[0], keys.pi_ff[0]
    tol = dict(atol=1e-3, rtol=0)
    torch.testing.assert_close(x[:, pi] @ pub["Wq0"], (x @ W["Wq0"])[:, pq] / math.sqrt(8), **tol)
    torch.testing.assert_close(x[:, pi] @ pub["Wk0"], (x @ W["Wk0"])[:, pk], **tol)
    torch.testing.assert_close(x[:, pi] @ pub["Wv0"], (x @ W["Wv0"])[:, pv], **tol)
    torch.testing.assert_close(x[:, pv] @ pub["Wo0"], (x @ W["Wo0"])[:, pi], **tol)
    torch.testing.assert_close(x[:, pi] @ pub["W10"], (x @ W["W10"])[:, p1], **tol)
    assert not torch.equal(pq, pk), "pi_q and pi_k must differ, or they cancel in Q K^T"
    # P1's own product of permuted queries and keys is not S; P0's M makes it so
    q, k = x[:, pi] @ pub["Wq0"], x[:, pi] @ pub["Wk0"]
    s = pinf.split_heads(x @ W["Wq0"], 2) @ pinf.split_heads(x @ W["Wk0"], 2).transpose(-1, -2) / math.sqrt(8)
    qh, kh = pinf.split_heads(q, 2), pinf.split_heads(k, 2)
    order = (pq.view(2, 8)[:, 0] // 8)                         # P0's head order
    assert (qh @ kh.transpose(-1, -2) - s[order]).abs().max() > 0.1
    torch.testing.assert_close(qh @ model.secret["M0"] @ kh.transpose(-1, -2), s[order], **tol)
    for name in ("tok", "Wc", "M0"):
        assert name not in model.pub


# ------------------------------------------------------------------------------------------- protocol
@pytest.mark.parametrize("seed, heads, d, seq", [(0, 2, 16, 8), (1, 4, 16, 6), (2, 1, 8, 5), (3, 2, 24, 12)])
def test_centaur_logits_match_plaintext_within_fixed_point(seed, heads, d, seq):
    W = random_model(seed, d=d, heads=heads, seq=seq)
    tokens = tokens_for(W, 6, seed)
    _, _, logits, chan = run(W, heads, tokens, seed)
    assert (logits - pinf.plain_forward(W, tokens, heads)).abs().max().item() < 5e-3
    assert chan.bytes.get("linear", 0) == 0 and chan.rounds.get("linear", 0) == 0


def test_channel_counts_per_layer_type():
    """Per block: 3 openings to P1 plus softmax, each 1 element sent by P0 and 1 back: 2 rounds each; attention's
    Beaver products in 3 rounds (Q M, K^T pi_s and pi_s^T V together; then S pi_s; then P V)."""
    W = random_model(0)
    B, n, d, h, dff, L = 4, 8, 16, 2, 32, 2
    _, _, _, chan = run(W, h, tokens_for(W, B, 0))
    assert chan.rounds["layernorm"] == 2 * (1 + 2 * L) and chan.rounds["gelu"] == 2 * L
    assert chan.rounds["attention"] == L * (3 + 2) and chan.rounds["embedding"] == 1 and chan.rounds["classifier"] == 1
    assert chan.bytes["layernorm"] == 8 * 2 * B * n * d * (1 + 2 * L)
    assert chan.bytes["gelu"] == 8 * 2 * B * n * dff * L
    dh = d // h
    beaver = lambda x, y: 2 * (x + y)
    per_block = (beaver(B * h * n * dh, h * dh * dh) + beaver(B * h * dh * n, B * h * n * n)
                 + beaver(B * h * n * n, B * h * n * dh) + beaver(B * h * n * dh, B * h * dh * n)
                 + 2 * B * h * n * n + beaver(B * h * n * n, B * h * n * dh))
    assert chan.bytes["attention"] == 8 * L * per_block


# ------------------------------------------------------------------------------------------- view test
def p1_plaintext_views(model, chan):
    return [v for v in chan.view_of("P1") if v.kind in ("opened", "computed")] + pinf.p1_derived_views(model, chan)


@pytest.mark.parametrize("seed, seq", [(0, 8), (1, 8), (2, 12)])
def test_no_p1_view_equals_an_unpermuted_activation_except_those_listed(seed, seq):
    """seq 8 <= d_h 8: P (the attention probabilities) is revealed by design; seq 12 > d_h: nothing is."""
    W = random_model(seed, seq=seq)
    tokens = tokens_for(W, 8, seed)
    plain = {}
    pinf.plain_forward(W, tokens, 2, plain)
    _, model, _, chan = run(W, 2, tokens, seed)
    stats = pinf.PlainStats(plain)
    listed = pinf.revealed_by_design(model, seq)
    assert listed == ({("derived", "probs0"), ("derived", "probs1")} if seq <= 8 else set())
    views = p1_plaintext_views(model, chan)
    assert {v.kind for v in views} == {"opened", "computed", "derived"} and len(views) == 2 + 2 * (8 + 8)
    for v in views:
        r = pinf.reveals(v.value, stats)
        if (v.kind, v.name) in listed:
            assert (v.name, "column means") in r.unpermuted, (v.label, r)
        else:
            assert r.unpermuted == [], (v.kind, v.name, v.label, r.unpermuted)
        if v.kind in ("opened", "computed"):           # permuting hides coordinates, never these
            for stat in pinf.INVARIANT_STATS:
                assert (v.name, stat) in r.invariants, (v.label, stat)


def test_the_derived_products_of_p1s_own_queries_and_keys_match_nothing():
    """The defect this design removes: with pi_q = pi_k P1 would compute S = Q K^T itself."""
    W = random_model(4)
    tokens = tokens_for(W, 8, 4)
    plain = {}
    pinf.plain_forward(W, tokens, 2, plain)
    _, model, _, chan = run(W, 2, tokens, 4)
    for v in pinf.p1_derived_views(model, chan):
        if v.key == "qk":
            r = pinf.reveals(v.value, plain)
            assert r.unpermuted == [] and r.invariants == [], r


def test_masked_views_are_uniform_and_match_nothing():
    W = random_model(5)
    tokens = tokens_for(W, 4, 5)
    plain = {}
    pinf.plain_forward(W, tokens, 2, plain)
    _, _, _, chan = run(W, 2, tokens, 5, keep_masked=True)
    masked = [v for v in chan.views if v.kind == "masked"]
    assert {v.party for v in masked} == {"P0", "P1"}
    assert all(v.kind == "masked" for v in chan.view_of("P0")), "P0 sees only shares and masked differences"
    assert {v.kind for v in chan.view_of("P2")} == {"input", "output"}
    bits = torch.cat([v.value.flatten() for v in masked if v.key == "beaver"])
    for bit in (0, 30, 62, 63):
        assert 0.47 < ((bits >> bit) & 1).double().mean().item() < 0.53
    for v in masked:
        if v.value.shape in {a.shape for a in plain.values()}:
            r = pinf.reveals(mpc.decode(v.value), plain)
            assert r.unpermuted == [] and r.invariants == [], (v.label, r)


def test_masked_values_are_not_kept_unless_asked():
    W = random_model(6)
    _, _, _, chan = run(W, 2, tokens_for(W, 2, 6))
    assert all(v.value is None for v in chan.views if v.kind == "masked")
    assert all(v.value is not None for v in chan.views if v.kind != "masked")


def test_threat_rows_cover_every_view_and_say_what_the_statistics_found():
    W = random_model(7)
    B = 4
    tokens = tokens_for(W, B, 7)
    plain = {}
    pinf.plain_forward(W, tokens, 2, plain)
    _, model, _, chan = run(W, 2, tokens, 7)
    views = chan.views + pinf.p1_derived_views(model, chan)
    rows = pinf.threat_rows(views, pinf.PlainStats(plain), B)
    assert sum(r["elements"] for r in rows) == pytest.approx(sum(math.prod(v.shape) for v in views) / B)
    by = {(r["party"], r["kind"], r["label"]): r for r in rows}
    opened = by["P1", "opened", "(X W_E + P) pi"]
    assert opened["unpermuted"] == [] and opened["invariants"] == list(pinf.INVARIANT_STATS)
    probs = [r for r in rows if r["kind"] == "derived" and r["label"].startswith("P:")][0]
    assert probs["unpermuted"] == ["probs0", "probs1"] and probs["where"] == ["block 0", "block 1"]


# -------------------------------------------------------------------------------------- the statistics
def test_match_statistics_tell_a_permutation_from_the_activation():
    g = gen(3)
    a = torch.randn(6, 10, 12, dtype=torch.float64, generator=g)
    same = pinf.match_statistics(a + 1e-6, a)
    assert all(v == 1.0 for v in same.values())
    cols = pinf.match_statistics(a[..., torch.randperm(12, generator=g)], a)
    assert all(cols[s] == 0.0 for s in pinf.UNPERMUTED_STATS) and all(cols[s] == 1.0 for s in pinf.INVARIANT_STATS)
    rows = pinf.match_statistics(a[:, torch.randperm(10, generator=g)], a)       # rows shuffled, columns not
    assert rows["column means"] == rows["sorted columns"] == rows["column Gram"] == 1.0 and rows["exact"] == 0.0


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda: pinf.plain_forward({"x": 1}, torch.zeros(1, 2, dtype=torch.int64), 2), "W: expected a mapping"),
    (lambda: pinf.plain_forward(random_model(0), torch.zeros(1, 2), 2), "tokens: expected an int64"),
    (lambda: pinf.plain_forward(random_model(0), torch.zeros(1, 2, dtype=torch.int64), 3), "heads: expected a divisor"),
    (lambda: pinf.centaur_setup(random_model(0), 2, 0), "gen: expected a torch.Generator"),
    (lambda: pinf.centaur_forward(None, torch.zeros(1, 2, dtype=torch.int64), []), "model: expected a CentaurModel"),
    (lambda: pinf.centaur_forward(pinf.centaur_setup(random_model(0), 2, gen(0))[1],
                                  torch.zeros(1, 2, dtype=torch.int64), [gen(0)]), "gens: expected 4"),
    (lambda: pinf.centaur_forward(pinf.centaur_setup(random_model(0), 2, gen(0))[1],
                                  torch.full((1, 2), 99), [gen(i) for i in range(4)]), r"tokens: expected ids in \[0, 12\)"),
    (lambda: pinf.match_statistics(torch.zeros(2, 3), torch.zeros(3, 2)), "view, act: expected two tensors of one shape"),
    (lambda: pinf.threat_rows([], {}, 1), "plain: expected PlainStats"),
    (lambda: pinf.PlainStats({"a": 1}), "plain: expected a mapping of names to tensors"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
