"""Private Transformer inference from permuted weights plus two-party secret sharing (Centaur), what each
party sees while it runs, and tests of what those views reveal.

Paper: J. Luo, G. Chen, Y. Zhang, S. Liu, H. Wang, Y. Yu, X. Zhou, Y. Qi, Z. Xu, "CENTAUR: Bridging the
Impossible Trinity of Privacy, Efficiency, and Performance in Privacy-Preserving Transformer Inference",
ACL 2025 (long papers), arXiv 2412.10652. Only the paper's abstract could be read; the protocol below is a
reconstruction (see the chapter's Deviations box). The ring machinery is ``kernels.mpc``.

The model is a post-LayerNorm encoder (BERT) with a classifier on the first row. P0, the model developer,
draws secret permutations; P1, the cloud, receives the weights permuted on both sides,

    W' = pi_in^T W pi_out,   so that   (X pi_in) W' = (X W) pi_out,                            (eq-lin)

and every linear layer is a local product of a share with a public matrix. Permutations used:

    pi      the residual stream (d), one for the whole model, reused by every query;
    pi_q, pi_k, pi_v   per block, the order of the heads (one order for all three) and, independently,
            the d_h columns within each head;
    pi_1    per block, the feed-forward width (d_ff);
    pi_s    per query and head, the n keys, fresh every time (a shared permutation matrix).

Attention, where P1 must not be able to multiply its own permuted queries and keys (with pi_q = pi_k the
permutations would cancel in Q K^T), needs the P0-secret matrix M = pi_q^T pi_k:

    S pi_s = (Q pi_q M) ((K pi_k)^T pi_s),
    O pi_v = softmax(S pi_s) (pi_s^T V pi_v),                                                   (eq-attn)

each product a Beaver product, and only S pi_s is opened, to P1. LayerNorm, GeLU and softmax are opened to P1
in permuted form, evaluated exactly and re-shared (eq-commute). The token and position embeddings and the
classifier stay with P0 and are applied by Beaver products on shares, so P1 never holds them.

``p1_derived_views`` adds what P1 can compute from its views and its public weights (queries, keys, values,
residual differences, the attention output and, when n <= d_h, the attention probabilities themselves).
``match_statistics`` and ``reveals`` compare any view with every activation of the plaintext run: statistics
that a column permutation changes (exact values, column means, sorted columns, the column Gram matrix) say
whether the view *is* an unpermuted activation; statistics it leaves unchanged (sorted rows, row norms, the row
Gram matrix) are what permuting cannot hide.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kernels import mpc
from kernels._validate import check_int, describe

LN_EPS = 1e-5
# statistics a column permutation changes (a match means "this is the activation, unpermuted")
UNPERMUTED_STATS = ("exact", "column means", "sorted columns", "column Gram")
# statistics a column permutation leaves unchanged (a match is what permuting cannot hide)
INVARIANT_STATS = ("sorted rows", "row norms", "row Gram")
MATCH_RTOL = 1e-2         # a statistic matches when ||difference|| <= MATCH_RTOL * ||plaintext statistic|| ...
MATCH_FRACTION = 0.5      # ... in at least this fraction of the groups (one group per query, or per query and head)


# ------------------------------------------------------------------------------------------ plaintext model
def _layers(W: Mapping[str, Tensor]) -> int:
    return sum(1 for k in W if k.startswith("Wq"))


def _check_weights(W: object, heads: int) -> tuple[int, int, int]:
    if not isinstance(W, Mapping) or "tok" not in W or "Wq0" not in W:
        raise ValueError(f"W: expected a mapping of weights with 'tok', 'pos', 'Wq0', ..., received {describe(W)}")
    check_int("heads", heads, 1)
    d = W["tok"].shape[1]
    if d % heads:
        raise ValueError(f"heads: expected a divisor of d = {d}, received {heads}")
    return d, d // heads, _layers(W)


def layer_norm(x: Tensor, g: Tensor, b: Tensor, eps: float = LN_EPS) -> Tensor:
    """LayerNorm over the last axis (row-wise, so it commutes with a column permutation of x, g and b)."""
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def split_heads(x: Tensor, heads: int) -> Tensor:
    """[..., n, d] -> [..., heads, n, d / heads]."""
    return x.view(*x.shape[:-1], heads, x.shape[-1] // heads).transpose(-3, -2)


def merge_heads(x: Tensor) -> Tensor:
    """[..., heads, n, d_h] -> [..., n, heads d_h]."""
    return x.transpose(-3, -2).reshape(*x.shape[:-3], x.shape[-2], x.shape[-3] * x.shape[-1])


def plain_forward(W: Mapping[str, Tensor], tokens: Tensor, heads: int,
                  record: dict[str, Tensor] | None = None) -> Tensor:
    """The plaintext encoder (differentiable); ``record`` receives every activation by name.

    Names: ``embed`` (X W_E + P), ``ln_e``; per block l: ``q``, ``k``, ``v`` ([B, H, n, d_h], q scaled by
    1 / sqrt(d_h)), ``scores`` S = q k^T and ``probs`` softmax(S) ([B, H, n, n]), ``attn_out`` (heads merged),
    ``attn`` (after W_O), ``ln1_in``, ``ln1``, ``gelu_in``, ``gelu``, ``ffn``, ``ln2_in``, ``ln2``, each with
    l appended; and ``logits``.
    """
    d, dh, layers = _check_weights(W, heads)
    if not isinstance(tokens, Tensor) or tokens.dtype != torch.int64 or tokens.dim() != 2:
        raise ValueError(f"tokens: expected an int64 tensor [B, n], received {describe(tokens)}")
    rec = record if record is not None else {}
    x = W["tok"][tokens] + W["pos"][: tokens.shape[1]]
    rec["embed"] = x
    x = rec["ln_e"] = layer_norm(x, W["ln_e_g"], W["ln_e_b"])
    for l in range(layers):
        q = rec[f"q{l}"] = split_heads(x @ W[f"Wq{l}"] + W[f"bq{l}"], heads) / math.sqrt(dh)
        k = rec[f"k{l}"] = split_heads(x @ W[f"Wk{l}"] + W[f"bk{l}"], heads)
        v = rec[f"v{l}"] = split_heads(x @ W[f"Wv{l}"] + W[f"bv{l}"], heads)
        s = rec[f"scores{l}"] = q @ k.transpose(-1, -2)
        p = rec[f"probs{l}"] = torch.softmax(s, -1)
        o = rec[f"attn_out{l}"] = merge_heads(p @ v)
        a = rec[f"attn{l}"] = o @ W[f"Wo{l}"] + W[f"bo{l}"]
        rec[f"ln1_in{l}"] = x + a
        x = rec[f"ln1{l}"] = layer_norm(x + a, W[f"ln1_g{l}"], W[f"ln1_b{l}"])
        h = rec[f"gelu_in{l}"] = x @ W[f"W1{l}"] + W[f"b1{l}"]
        g = rec[f"gelu{l}"] = F.gelu(h)
        f = rec[f"ffn{l}"] = g @ W[f"W2{l}"] + W[f"b2{l}"]
        rec[f"ln2_in{l}"] = x + f
        x = rec[f"ln2{l}"] = layer_norm(x + f, W[f"ln2_g{l}"], W[f"ln2_b{l}"])
    logits = rec["logits"] = x[:, 0] @ W["Wc"] + W["bc"]
    return logits


# ---------------------------------------------------------------------------------------- P0's set-up
def _head_perm(order: Tensor, dh: int, gen: torch.Generator) -> Tensor:
    """A permutation of d = heads d_h columns: the heads in ``order``, each head's d_h columns shuffled: [d]."""
    return torch.cat([int(h) * dh + torch.randperm(dh, generator=gen) for h in order])


def _perm_matrix(index: Tensor) -> Tensor:
    """The matrix pi with (X pi)[..., j] = X[..., index[j]]: pi[index[j], j] = 1."""
    n = index.shape[-1]
    out = torch.zeros(*index.shape[:-1], n, n, dtype=torch.float64)
    return out.scatter_(-2, index.unsqueeze(-2), 1.0)


@dataclass
class CentaurKeys:
    """P0's secret permutations, as index tensors (X pi == X[..., pi])."""

    pi: Tensor
    pi_q: list[Tensor]
    pi_k: list[Tensor]
    pi_v: list[Tensor]
    pi_ff: list[Tensor]


@dataclass
class CentaurModel:
    """What each computing party holds before any query: ``pub`` goes to P1 (encoded, or float for the
    LayerNorm parameters it uses on opened rows); ``secret`` stays with P0 (shared with P1 per query)."""

    heads: int
    pub: dict[str, Tensor]
    secret: dict[str, Tensor]
    layers: int = field(init=False)

    def __post_init__(self) -> None:
        self.layers = _layers(self.pub)


def centaur_setup(W: Mapping[str, Tensor], heads: int, gen: torch.Generator,
                  frac_bits: int = mpc.FRAC_BITS) -> tuple[CentaurKeys, CentaurModel]:
    """P0 draws the permutations and permutes every weight on both sides (eq-lin); 1 / sqrt(d_h) goes into W_Q.

    P1 receives pi^T W_Q pi_q, pi^T W_K pi_k, pi^T W_V pi_v, pi_v^T W_O pi, pi^T W_1 pi_1, pi_1^T W_2 pi and the
    biases and LayerNorm parameters permuted to match; P0 keeps W_E pi, P pi, the classifier pi^T W_c, b_c and
    M = pi_q^T pi_k per head (the matrix that lets shares of Q pi_q meet shares of K pi_k).
    """
    d, dh, layers = _check_weights(W, heads)
    if not isinstance(gen, torch.Generator):
        raise ValueError(f"gen: expected a torch.Generator, received {type(gen).__name__}")
    dff = W["W10"].shape[1]
    enc = lambda t: mpc.encode(t.double(), frac_bits)
    pi = torch.randperm(d, generator=gen)
    keys = CentaurKeys(pi, [], [], [], [])
    pub = {"ln_e_g": W["ln_e_g"][pi].double(), "ln_e_b": W["ln_e_b"][pi].double()}
    secret = {"tok": W["tok"][:, pi].double(), "pos": enc(W["pos"][:, pi]), "Wc": W["Wc"][pi].double(),
              "bc": W["bc"].double()}
    for l in range(layers):
        order = torch.randperm(heads, generator=gen)            # one head order for Q, K and V
        pq, pk, pv = (_head_perm(order, dh, gen) for _ in range(3))
        p1 = torch.randperm(dff, generator=gen)
        keys.pi_q.append(pq), keys.pi_k.append(pk), keys.pi_v.append(pv), keys.pi_ff.append(p1)
        scale = 1 / math.sqrt(dh)
        pub[f"Wq{l}"], pub[f"bq{l}"] = enc(W[f"Wq{l}"][pi][:, pq] * scale), enc(W[f"bq{l}"][pq] * scale)
        pub[f"Wk{l}"], pub[f"bk{l}"] = enc(W[f"Wk{l}"][pi][:, pk]), enc(W[f"bk{l}"][pk])
        pub[f"Wv{l}"], pub[f"bv{l}"] = enc(W[f"Wv{l}"][pi][:, pv]), enc(W[f"bv{l}"][pv])
        pub[f"Wo{l}"], pub[f"bo{l}"] = enc(W[f"Wo{l}"][pv][:, pi]), enc(W[f"bo{l}"][pi])
        pub[f"W1{l}"], pub[f"b1{l}"] = enc(W[f"W1{l}"][pi][:, p1]), enc(W[f"b1{l}"][p1])
        pub[f"W2{l}"], pub[f"b2{l}"] = enc(W[f"W2{l}"][p1][:, pi]), enc(W[f"b2{l}"][pi])
        for i in (1, 2):
            pub[f"ln{i}_g{l}"], pub[f"ln{i}_b{l}"] = W[f"ln{i}_g{l}"][pi].double(), W[f"ln{i}_b{l}"][pi].double()
        # per head block: M[i, j] = 1 iff pi_q[i] == pi_k[j], so (Q pi_q) M = Q pi_k and (Q pi_q M)(K pi_k)^T = Q K^T
        local_q = pq.view(heads, dh) % dh
        local_k = pk.view(heads, dh) % dh
        secret[f"M{l}"] = _perm_matrix(torch.argsort(local_q, -1).gather(-1, local_k))
    return keys, CentaurModel(heads, pub, secret)


# ---------------------------------------------------------------------------------------- the protocol
def _p0_shares(value: Tensor, gen: torch.Generator, chan: mpc.Channel, label: str,
               frac_bits: int = mpc.FRAC_BITS) -> mpc.Shared:
    """P0 secret-shares a value only it knows (a weight, a permutation): input-independent, counted offline."""
    out = mpc.share(mpc.encode(value, frac_bits), gen)
    chan.offline(out.s1)
    chan.see("P1", "masked", "p0_share", label, out.s1)
    return out


def _linear(x: mpc.Shared, w: Tensor, b: Tensor, frac_bits: int = mpc.FRAC_BITS) -> mpc.Shared:
    """eq-lin: a public fixed-point weight, applied locally to each share, then truncated. No messages."""
    return mpc.matmul_public(x, w, frac_bits).add_public(b)


def open_apply_reshare(x: mpc.Shared, fn: Callable[[Tensor], Tensor], gen: torch.Generator, chan: mpc.Channel,
                       key: str, label: str, out_key: str, out_label: str,
                       frac_bits: int = mpc.FRAC_BITS) -> mpc.Shared:
    """eq-commute: P0 sends its share, P1 opens the permuted value, applies fn exactly, re-shares (2 rounds)."""
    z = mpc.decode(mpc.reveal_to_p1(x, chan, key, label, frac_bits), frac_bits)
    y = fn(z)
    chan.see("P1", "computed", out_key, out_label, y)
    return mpc.reshare_from_p1(mpc.encode(y, frac_bits), gen, chan)


def _client_input(tokens: Tensor, vocab: int, chan: mpc.Channel, gen: torch.Generator,
                  frac_bits: int) -> mpc.Shared:
    """P2 one-hot encodes its tokens and sends one share to P0 and one to P1."""
    with chan.tag("input/output"):
        x = mpc.share(mpc.encode(F.one_hot(tokens, vocab).double(), frac_bits), gen)
        chan.send(x.s0, x.s1)
        chan.see("P2", "input", "tokens", "its own tokens", tokens.double())
        chan.see("P0", "masked", "input", "client's share of the one-hot input", x.s0)
        chan.see("P1", "masked", "input", "client's share of the one-hot input", x.s1)
    return x


def _client_output(logits: mpc.Shared, chan: mpc.Channel, frac_bits: int) -> Tensor:
    """P0 and P1 send their logit shares to P2, who adds them."""
    with chan.tag("input/output"):
        chan.send(logits.s0, logits.s1)
        out = mpc.decode(mpc.reconstruct(logits), frac_bits)
        chan.see("P2", "output", "logits", "the logits", out)
    return out


def score_permutations(shape: Sequence[int], n: int, gen: torch.Generator) -> Tensor:
    """Fresh uniform permutation matrices pi_s of the n keys, one per query and head: [*shape, n, n]."""
    return _perm_matrix(torch.rand(*shape, n, generator=gen).argsort(-1))


def centaur_forward(model: CentaurModel, tokens: Tensor, gens: Sequence[torch.Generator],
                    chan: mpc.Channel | None = None, frac_bits: int = mpc.FRAC_BITS) -> tuple[Tensor, mpc.Channel]:
    """One batch of queries through the protocol. ``gens``: P0's, P1's, P2's and the dealer's randomness.

    Returns the logits P2 reconstructs and the channel (bytes, rounds, and every party's view).
    """
    if not isinstance(model, CentaurModel):
        raise ValueError(f"model: expected a CentaurModel, received {type(model).__name__}")
    if not isinstance(tokens, Tensor) or tokens.dtype != torch.int64 or tokens.dim() != 2:
        raise ValueError(f"tokens: expected an int64 tensor [B, n], received {describe(tokens)}")
    if len(gens) != 4 or not all(isinstance(g, torch.Generator) for g in gens):
        raise ValueError(f"gens: expected 4 torch.Generator (P0, P1, P2, dealer), received {len(gens)} items")
    pub, sec, heads = model.pub, model.secret, model.heads
    chan = mpc.Channel() if chan is None else chan
    g0, g1, g2, gd = gens
    dealer = mpc.Dealer(gd, chan)
    B, n = tokens.shape
    vocab = sec["tok"].shape[0]
    if int(tokens.max()) >= vocab or int(tokens.min()) < 0:
        raise ValueError(f"tokens: expected ids in [0, {vocab}), received [{int(tokens.min())}, {int(tokens.max())}]")
    ln = lambda g, b: (lambda z: layer_norm(z, pub[g], pub[b]))
    orr = lambda x, fn, key, label, okey, olabel: open_apply_reshare(x, fn, g1, chan, key, label, okey, olabel,
                                                                     frac_bits)
    lin = lambda x, w, b: _linear(x, pub[w], pub[b], frac_bits)
    bmm = lambda x, y: mpc.beaver_matmul(x, y, dealer, chan, frac_bits)
    T = lambda t: t.transpose(-1, -2)

    x = _client_input(tokens, vocab, chan, g2, frac_bits)
    with chan.tag("embedding"):
        we = _p0_shares(sec["tok"], g0, chan, "P0's share of W_E pi", frac_bits)
        x = bmm(x, we).add_public(sec["pos"][:n])                                    # [[(X W_E + P) pi]]
    with chan.tag("layernorm"):
        x = orr(x, ln("ln_e_g", "ln_e_b"), "embed", "(X W_E + P) pi", "ln_e", "LN(.) pi, embedding")
    for l in range(model.layers):
        with chan.block(l):
            with chan.tag("linear"):                                                 # eq-lin, no messages
                q, k, v = (lin(x, f"W{c}{l}", f"b{c}{l}").map(lambda t: split_heads(t, heads)) for c in "qkv")
            with chan.tag("attention"):
                m = _p0_shares(sec[f"M{l}"], g0, chan, "P0's share of M = pi_q^T pi_k", frac_bits)
                pis = _p0_shares(score_permutations((B, heads), n, g0), g0, chan, "P0's share of pi_s", frac_bits)
                with chan.parallel():                                                # one round
                    qm = bmm(q, m)                                                   # [[Q pi_q M]] = [[Q pi_k]]
                    kp = bmm(k.map(T), pis)                                          # [[(K pi_k)^T pi_s]]
                    vp = bmm(pis.map(T), v)                                          # [[pi_s^T V pi_v]]
                sp = bmm(qm, kp)                                                     # [[S pi_s]]   eq-attn
                pp = orr(sp, lambda z: torch.softmax(z, -1), "scores", "S pi_s (fresh pi_s per query, head)",
                         "probs", "softmax(S) pi_s")
                o = bmm(pp, vp)                                                      # [[O pi_v]]   eq-attn
            with chan.tag("linear"):
                a = lin(o.map(merge_heads), f"Wo{l}", f"bo{l}")                      # [[A pi]]
            with chan.tag("layernorm"):
                x = orr(x + a, ln(f"ln1_g{l}", f"ln1_b{l}"), "ln1_in", "(Y + A) pi", "ln1", "LN(.) pi, after attention")
            with chan.tag("linear"):
                h = lin(x, f"W1{l}", f"b1{l}")                                       # [[H pi_1]]
            with chan.tag("gelu"):
                h = orr(h, F.gelu, "gelu_in", "H pi_1", "gelu", "GeLU(H) pi_1")
            with chan.tag("linear"):
                f = lin(h, f"W2{l}", f"b2{l}")                                       # [[F pi]]
            with chan.tag("layernorm"):
                x = orr(x + f, ln(f"ln2_g{l}", f"ln2_b{l}"), "ln2_in", "(Y + F) pi", "ln2", "LN(.) pi, after FFN")
    with chan.tag("classifier"):
        wc = _p0_shares(sec["Wc"], g0, chan, "P0's share of pi^T W_c", frac_bits)
        bc = _p0_shares(sec["bc"], g0, chan, "P0's share of b_c", frac_bits)
        logits = bmm(x.map(lambda t: t[:, :1]), wc).map(lambda t: t[:, 0]) + bc     # [[logits]], never opened
    return _client_output(logits, chan, frac_bits), chan


# ------------------------------------------------------------------------------------ what P1 can derive
def p1_derived_views(model: CentaurModel, chan: mpc.Channel) -> list[mpc.View]:
    """The attacker's closure: what P1 computes from its own views with the public weights it holds.

    Per block: its queries, keys and values (permuted within heads), the product of its own queries and keys,
    the residual differences A pi and F pi (the next opened LayerNorm input minus the LayerNorm output it
    computed), the attention output O pi_v = (A pi - b_O') W_O'^{-1}, and the attention probabilities
    P_h = O_h pi_v (V_h pi_v)^+ (exact when n <= d_h, where V_h has full row rank).
    """
    if not isinstance(model, CentaurModel):
        raise ValueError(f"model: expected a CentaurModel, received {type(model).__name__}")
    seen = {v.name: v.value for v in chan.view_of("P1") if v.kind in ("opened", "computed")}
    pub = {k: (mpc.decode(v) if v.dtype == torch.int64 else v) for k, v in model.pub.items()}
    heads, out = model.heads, []

    def add(key: str, label: str, block: int, value: Tensor) -> None:
        out.append(mpc.View("P1", "derived", key, label, "derived", block, tuple(value.shape), value))

    prev = seen["ln_e"]
    for l in range(model.layers):
        q, k, v = (split_heads(prev @ pub[f"W{c}{l}"] + pub[f"b{c}{l}"], heads) for c in "qkv")
        add("q", "Q pi_q = LN(.) pi W_Q'", l, q)
        add("k", "K pi_k", l, k)
        add("v", "V pi_v", l, v)
        add("qk", "(Q pi_q)(K pi_k)^T", l, q @ k.transpose(-1, -2))
        a = seen[f"ln1_in{l}"] - prev
        add("attn", "A pi = opened LN input - own LN output", l, a)
        o = torch.linalg.solve(pub[f"Wo{l}"].T, (a - pub[f"bo{l}"]).transpose(-1, -2)).transpose(-1, -2)
        add("attn_out", "O pi_v = (A pi - b_O') W_O'^-1", l, o)
        p_hat = split_heads(o, heads) @ torch.linalg.pinv(v)                        # P_h V_h = O_h
        # each row's values are known exactly (softmax(S) pi_s only shuffles a row): place them in p_hat's order
        ranks = p_hat.argsort(-1).argsort(-1)
        p = seen[f"probs{l}"].sort(-1).values.gather(-1, ranks)
        add("probs", "P: own softmax rows, ordered by O pi_v (V pi_v)^+", l, p)
        add("ffn", "F pi = opened LN input - own LN output", l, seen[f"ln2_in{l}"] - seen[f"ln1{l}"])
        prev = seen[f"ln2{l}"]
    return out


# -------------------------------------------------------------------------------------- comparing views
def _statistic(name: str, t: Tensor) -> Tensor:
    """One statistic of a [..., rows, features] tensor. Column statistics pool every row of every query (one
    group); row statistics and exact values keep one group per leading index (query, or query and head)."""
    if t.dim() == 1:
        t = t.unsqueeze(-1)
    t = t.double()
    if name in ("column means", "sorted columns", "column Gram"):
        flat = t.reshape(-1, t.shape[-1])                                           # [all rows, features]
        stat = {"column means": lambda: flat.mean(0), "sorted columns": lambda: flat.sort(0).values,
                "column Gram": lambda: flat.T @ flat / len(flat)}[name]()
        return stat.reshape(1, -1)
    g = t.reshape(-1, *t.shape[-2:])                                                # [groups, rows, features]
    if name == "exact":
        return g.flatten(1)
    if name == "sorted rows":
        return g.sort(-1).values.flatten(1)
    if name == "row norms":
        return g.norm(dim=-1)
    if name == "row Gram":
        return (g @ g.transpose(-1, -2)).flatten(1)
    raise ValueError(f"name: expected one of {UNPERMUTED_STATS + INVARIANT_STATS}, received {name!r}")


def _match(sv: Tensor, sa: Tensor, rtol: float) -> float:
    """Fraction of groups whose statistics agree: ||s_view - s_plain|| <= rtol ||s_plain|| (Frobenius)."""
    return ((sv - sa).norm(dim=1) <= rtol * sa.norm(dim=1).clamp_min(1e-12)).double().mean().item()


def match_statistics(view: Tensor, act: Tensor, rtol: float = MATCH_RTOL) -> dict[str, float]:
    """For each statistic, the fraction of groups in which the view's statistic equals the plaintext
    activation's within ``rtol`` (relative, Frobenius norm). Column statistics form one group."""
    if not isinstance(view, Tensor) or not isinstance(act, Tensor) or view.shape != act.shape:
        raise ValueError(f"view, act: expected two tensors of one shape, received {describe(view)} and {describe(act)}")
    act = act.detach()
    return {name: _match(_statistic(name, view), _statistic(name, act), rtol)
            for name in UNPERMUTED_STATS + INVARIANT_STATS}


@dataclass
class Reveal:
    """What one view equals, by the statistics: (activation, statistic) pairs that say it *is* that activation
    unpermuted, and (activation, statistic) pairs of the invariants it shares with an activation."""

    unpermuted: list[tuple[str, str]]
    invariants: list[tuple[str, str]]


class PlainStats:
    """The statistics of every activation of a plaintext run, computed once (on the first ``queries`` rows)."""

    def __init__(self, plain: Mapping[str, Tensor], queries: int | None = None) -> None:
        if not isinstance(plain, Mapping) or not all(isinstance(v, Tensor) for v in plain.values()):
            raise ValueError(f"plain: expected a mapping of names to tensors, received {describe(plain)}")
        self.queries = queries
        self.acts = {k: (v.detach()[:queries] if queries else v.detach()) for k, v in plain.items()}
        self._cache: dict[tuple[str, str], Tensor] = {}

    def stat(self, name: str, statistic: str) -> Tensor:
        if (name, statistic) not in self._cache:
            self._cache[name, statistic] = _statistic(statistic, self.acts[name])
        return self._cache[name, statistic]


def reveals(view: Tensor, plain: PlainStats | Mapping[str, Tensor], rtol: float = MATCH_RTOL,
            fraction: float = MATCH_FRACTION) -> Reveal:
    """Compare a view with every same-shape activation of the plaintext run, statistic by statistic.

    A 4-D view [B, H, n, x] has its heads in P0's secret order; P1 can try all H! orders, so a statistic
    computed per query and head matches if it matches for some order of the activation's heads.
    """
    if not isinstance(view, Tensor):
        raise ValueError(f"view: expected a tensor, received {describe(view)}")
    ps = plain if isinstance(plain, PlainStats) else PlainStats(plain)
    if ps.queries:
        view = view[: ps.queries]
    heads = view.shape[1] if view.dim() == 4 and math.factorial(view.shape[1]) <= 720 else 0
    orders = [list(o) for o in itertools.permutations(range(heads))] if heads else []
    unperm, inv = [], []
    own: dict[str, Tensor] = {}
    for name in ps.acts:
        if ps.acts[name].shape != view.shape:
            continue
        for statistic in UNPERMUTED_STATS + INVARIANT_STATS:
            if statistic not in own:
                own[statistic] = _statistic(statistic, view)
            sv, sa = own[statistic], ps.stat(name, statistic)
            if heads and len(sv) > 1:                         # per query and head: [B, H, f], any head order
                sv, sa = sv.view(-1, heads, sv.shape[-1]), sa.view(-1, heads, sa.shape[-1])
                diff = (sv.unsqueeze(2) - sa.unsqueeze(1)).norm(dim=-1)                    # [B, H view, H plain]
                ok = (diff <= rtol * sa.norm(dim=-1).clamp_min(1e-12).unsqueeze(1)).double().mean(0)
                frac = max(sum(ok[i, o[i]].item() for i in range(heads)) / heads for o in orders)
            else:
                frac = _match(sv, sa, rtol)
            if frac >= fraction:
                (unperm if statistic in UNPERMUTED_STATS else inv).append((name, statistic))
    return Reveal(unperm, inv)


def revealed_by_design(model: CentaurModel, n: int) -> set[tuple[str, str]]:
    """The (kind, name) views this design shows P1 unpermuted: the attention probabilities P, derived from the
    residual difference, whenever n <= d_h (V_h then has full row rank and P_h V_h = O_h one solution)."""
    dh = model.pub["Wq0"].shape[1] // model.heads
    return {("derived", f"probs{l}") for l in range(model.layers)} if n <= dh else set()


def threat_rows(views: Sequence[mpc.View], plain: PlainStats, batch: int) -> list[dict[str, object]]:
    """The threat table, one row per (party, kind, label): where it occurs, elements per query, and what the
    statistics find in it (plaintext views only; masked views are uniform by construction). Each row also
    keeps its plaintext views with their ``Reveal`` under "checked"."""
    if not isinstance(plain, PlainStats):
        raise ValueError(f"plain: expected PlainStats, received {type(plain).__name__}")
    check_int("batch", batch, 1)
    rows: dict[tuple[str, str, str], dict[str, object]] = {}
    for v in views:
        row = rows.setdefault((v.party, v.kind, v.label), {"party": v.party, "kind": v.kind, "label": v.label,
                                                           "where": [], "elements": 0.0, "unpermuted": [],
                                                           "invariants": [], "checked": []})
        where = v.tag if v.block is None else f"block {v.block}"
        if where not in row["where"]:
            row["where"].append(where)
        row["elements"] += math.prod(v.shape) / batch
        if v.value is not None and v.kind in ("opened", "computed", "derived"):
            r = reveals(v.value, plain)
            row["checked"].append((v, r))
            for a, _ in r.unpermuted:
                if a not in row["unpermuted"]:
                    row["unpermuted"].append(a)
            for _, stat in r.invariants:
                if stat not in row["invariants"]:
                    row["invariants"].append(stat)
    for row in rows.values():
        row["invariants"].sort(key=INVARIANT_STATS.index)
    return list(rows.values())


# ------------------------------------------------------------------------------------------- benchmark
def bench_cases(quick: bool = False) -> list:
    """``make bench``: one batch through the protocol (all parties in one process) against the plaintext
    forward pass, and the attacker's closure and view comparison, on a random encoder (d = 64, 4 heads)."""
    from kernels.bench import Case

    d, heads, dff, layers, vocab, n = (32, 2, 64, 1, 16, 8) if quick else (64, 4, 256, 2, 33, 16)
    batch = 8 if quick else 64
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    W = {"tok": r(vocab, d), "pos": r(n, d), "ln_e_g": torch.ones(d, dtype=torch.float64),
         "ln_e_b": torch.zeros(d, dtype=torch.float64), "Wc": r(d, 2) / math.sqrt(d), "bc": torch.zeros(2, dtype=torch.float64)}
    for l in range(layers):
        for c in "qkvo":
            W[f"W{c}{l}"], W[f"b{c}{l}"] = r(d, d) / math.sqrt(d), torch.zeros(d, dtype=torch.float64)
        W[f"W1{l}"], W[f"b1{l}"] = r(d, dff) / math.sqrt(d), torch.zeros(dff, dtype=torch.float64)
        W[f"W2{l}"], W[f"b2{l}"] = r(dff, d) / math.sqrt(dff), torch.zeros(d, dtype=torch.float64)
        for i in (1, 2):
            W[f"ln{i}_g{l}"], W[f"ln{i}_b{l}"] = torch.ones(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    tokens = torch.randint(0, vocab, (batch, n), generator=g)
    _, model = centaur_setup(W, heads, torch.Generator().manual_seed(1))
    gens = lambda: [torch.Generator().manual_seed(2 + i) for i in range(4)]
    _, chan = centaur_forward(model, tokens, gens())
    plain: dict[str, Tensor] = {}
    plain_forward(W, tokens, heads, plain)
    stats = PlainStats(plain)
    fns = {"plaintext forward": lambda: plain_forward(W, tokens, heads),
           "Centaur forward (2PC, one process)": lambda: centaur_forward(model, tokens, gens()),
           "P1's derived views": lambda: p1_derived_views(model, chan),
           "threat rows (every view vs every activation)": lambda: threat_rows(chan.views, stats, batch)}
    return [Case(f"Centaur protocol, batch {batch}, d {d}, {layers} block(s)", fns, baseline="plaintext forward")]
