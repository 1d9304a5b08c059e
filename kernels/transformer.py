"""A small pre-norm decoder-only transformer, shared by the language chapters (Over-Tokenized Transformer
first; RELAY and WebLLM reuse it).

Block (Vaswani et al. 2017, pre-norm as in GPT-2/LLaMA):

    h = x + Attn(RMSNorm(x)),   y = h + MLP(RMSNorm(h))
    Attn(z) = softmax(Q K^T / sqrt(d_h) + mask) V,  Q, K rotated by RoPE (Su et al. 2021)          (Eq. 1)
    RMSNorm(z) = z / sqrt(mean(z^2) + eps) * g                                                    (Eq. 2)
    RoPE: (q_{2i}, q_{2i+1}) rotated by angle p * base^{-2i/d_h} at position p                      (Eq. 3)

Attention goes through ``torch.nn.functional.scaled_dot_product_attention``; ``naive_attention`` is the
explicit-softmax reference with the mask materialised. Three modes: bidirectional and causal over a whole
sequence, and decoding with a KV cache, where the keys and values of earlier positions are kept so that a
new token at position p only computes its own:

    K_{<=p} = [K_{<p}; k_p],  V_{<=p} = [V_{<p}; v_p],  y_p = softmax(q_p K_{<=p}^T / sqrt(d_h)) V_{<=p}     (Eq. 4)

An optional band (sliding-window) mask limits position i to keys j with |i - j| <= w (bidirectional) or
0 <= i - j <= w (causal):

    mask_w[i, j] = |i - j| <= w                                                                   (Eq. 5)

``StaticKVCache`` preallocates [B, H, T_max, d_h] per layer and writes in place; ``CatKVCache`` grows by
``torch.cat`` every step (the naive reference); ``generate_greedy`` decodes a batch with either, or with no
cache at all (full recompute every step).

``TinyLlama`` (the WebLLM chapter) is the Llama-style variant: the MLP is SwiGLU (Shazeer 2020) without biases,

    SwiGLU(z) = W_down (silu(W_gate z) * W_up z),   silu(a) = a * sigmoid(a)                      (Eq. 6)

and the LM head is the token table read as a matrix (``TiedEmbedding.logits``), so that one quantized table can
serve both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels._validate import check_int


class RMSNorm(nn.Module):
    """Eq. 2."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_angles(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin of Eq. 3 for integer ``positions`` [T] -> two [T, head_dim / 2] tensors."""
    if head_dim % 2:
        raise ValueError(f"head_dim: expected an even number, received {head_dim}")
    if positions.ndim != 1 or positions.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"positions: expected a 1-D integer tensor, received {tuple(positions.shape)} {positions.dtype}")
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    ang = positions.to(torch.float32)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x_{2i}, x_{2i+1}) of x [..., T, head_dim] by the angles of Eq. 3."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


def band_mask(length: int, window: int, causal: bool, device: torch.device | None = None) -> Tensor:
    """Boolean [length, length] mask of Eq. 5 (True = may attend), intersected with the causal mask if asked."""
    check_int("length", length, 1)
    check_int("window", window, 1)
    i = torch.arange(length, device=device)
    d = i[:, None] - i[None, :]
    return (d >= 0) & (d <= window) if causal else d.abs() <= window


def naive_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool, window: int = 0) -> Tensor:
    """Eq. 1 written out: scores, a materialised -inf mask (causal and/or band), softmax, weighted sum."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    Tq, Tk = q.shape[-2], k.shape[-2]
    mask = None
    if causal:
        mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
    if window:
        if Tq != Tk:
            raise ValueError(f"window: a band mask needs as many queries as keys, received {Tq} and {Tk}")
        band = band_mask(Tq, window, causal, q.device)
        mask = band if mask is None else mask & band
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class _KVCache:
    """What both caches share: the batch, the capacity and the next position to write."""

    def __init__(self, batch: int, max_len: int) -> None:
        self.batch, self.max_len, self.pos = batch, max_len, 0

    def check(self, batch: int, new: int) -> None:
        if batch != self.batch:
            raise ValueError(f"tokens: batch {batch} does not match the cache's batch {self.batch}")
        if self.pos + new > self.max_len:
            raise ValueError(f"tokens: position {self.pos} + {new} new tokens exceeds the cache's max_len {self.max_len}")

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def advance(self, new: int) -> None:
        self.pos += new


class StaticKVCache(_KVCache):
    """Preallocated keys and values, [B, H, max_len, d_h] per layer, written in place at the current position."""

    def __init__(self, layers: int, batch: int, heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> None:
        for name, v in (("layers", layers), ("batch", batch), ("heads", heads), ("max_len", max_len), ("head_dim", head_dim)):
            check_int(name, v, 1)
        shape = (batch, heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        super().__init__(batch, max_len)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, H, t, d_h] at positions pos..pos+t-1 (Eq. 4) and return all keys/values so far."""
        end = self.pos + k.shape[2]
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class CatKVCache(_KVCache):
    """The naive cache: keys and values grown by ``torch.cat`` on every step (a new allocation each time)."""

    def __init__(self, layers: int, batch: int, max_len: int) -> None:
        self.k: list[Tensor | None] = [None] * layers
        self.v: list[Tensor | None] = [None] * layers
        super().__init__(batch, max_len)

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k[layer] = k if self.k[layer] is None else torch.cat([self.k[layer], k], dim=2)
        self.v[layer] = v if self.v[layer] is None else torch.cat([self.v[layer], v], dim=2)
        return self.k[layer], self.v[layer]


def _prefix_causal_mask(new: int, total: int, device: torch.device) -> Tensor:
    """Boolean [new, total] mask: the i-th new token (at position total-new+i) sees positions <= its own."""
    return torch.ones(new, total, dtype=torch.bool, device=device).tril(diagonal=total - new)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"dim, heads: expected dim divisible by heads with an even head size, received {dim}, {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, positions: Tensor, causal: bool = True, naive: bool = False,
                cache: _KVCache | None = None, layer: int = 0, window: int = 0) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)   # [B, H, T, d_h]
        cos, sin = rope_angles(positions, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:                                  # Eq. 4: attend over everything cached so far
            k, v = cache.update(layer, k, v)
        if naive:
            y = naive_attention(q, k, v, causal, window)
        elif window:                                           # Eq. 5: band mask
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=band_mask(T, window, causal, x.device))
        elif not causal or k.shape[2] == T:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal and T > 1)
        elif T == 1:                                           # one new token sees the whole cache: no mask
            y = F.scaled_dot_product_attention(q, k, v)
        else:                                                  # a chunk appended to a cache: offset causal mask
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=_prefix_causal_mask(T, k.shape[2], x.device))
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1, self.attn = RMSNorm(dim), Attention(dim, heads)
        self.norm2, self.mlp = RMSNorm(dim), MLP(dim, mlp_ratio * dim)

    def forward(self, x: Tensor, positions: Tensor, causal: bool = True, naive: bool = False,
                cache: _KVCache | None = None, layer: int = 0, window: int = 0) -> Tensor:
        if window and cache is not None:
            raise ValueError("window: a band mask is for full-sequence modes; received window with a KV cache")
        x = x + self.attn(self.norm1(x), positions, causal, naive, cache, layer, window)
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    """Decoder-only language model: input embedding -> blocks -> RMSNorm -> head tied to the token embedding.

    ``embed`` replaces the plain ``nn.Embedding(vocab, dim)`` (e.g. ``kernels.ngram.OverEncoding``); the head
    is tied to its ``wte`` if it has one, else to its ``weight``.
    """

    def __init__(self, vocab: int, dim: int, layers: int, heads: int, embed: nn.Module | None = None) -> None:
        super().__init__()
        for name, v in (("vocab", vocab), ("dim", dim), ("layers", layers), ("heads", heads)):
            check_int(name, v, 1)
        self.vocab = vocab
        self.embed = embed if embed is not None else nn.Embedding(vocab, dim)
        if embed is None:
            nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = RMSNorm(dim)
        tied = getattr(self.embed, "wte", self.embed)
        if tied.weight.shape != (vocab, dim):
            raise ValueError(f"embed: expected a token table of shape ({vocab}, {dim}), received {tuple(tied.weight.shape)}")
        self.head_weight = tied.weight

    def forward(self, tokens: Tensor, causal: bool = True, naive: bool = False,
                cache: _KVCache | None = None) -> Tensor:
        """Logits [B, T, vocab]. With ``cache``, ``tokens`` are the next T tokens after ``cache.pos``."""
        if tokens.dtype != torch.int64 or tokens.ndim != 2:
            raise ValueError(f"tokens: expected int64 [B, T], received {tuple(tokens.shape)} {tokens.dtype}")
        start = 0
        if cache is not None:
            if not causal:
                raise ValueError("cache: a KV cache only makes sense with causal attention (causal=True)")
            cache.check(tokens.shape[0], tokens.shape[1])
            start = cache.pos
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.embed(tokens)
        for i, block in enumerate(self.blocks):
            x = block(x, positions, causal, naive, cache, i)
        if cache is not None:
            cache.advance(tokens.shape[1])
        return self.logits(self.norm(x))

    def logits(self, h: Tensor) -> Tensor:
        """The LM head: h [..., dim] -> [..., vocab] through the tied token table."""
        return h @ self.head_weight.t()

    def new_cache(self, batch: int, max_len: int, kind: str = "static") -> _KVCache:
        """An empty KV cache for this model: "static" (preallocated, in place) or "cat" (naive)."""
        attn = self.blocks[0].attn
        if kind == "static":
            return StaticKVCache(len(self.blocks), batch, attn.heads, max_len, attn.head_dim,
                                 dtype=self.norm.weight.dtype, device=self.norm.weight.device)
        if kind == "cat":
            return CatKVCache(len(self.blocks), batch, max_len)
        raise ValueError(f"kind: expected 'static' or 'cat', received {kind!r}")

    def non_embedding_parameters(self) -> int:
        """Parameters outside the input tables (blocks, final norm, n-gram projections), the usual size measure."""
        tables = {id(p) for m in self.embed.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in tables)


@torch.no_grad()
def generate_greedy(model: TinyGPT, prompt: Tensor, steps: int, cache: str = "static") -> Tensor:
    """Greedy decoding of ``steps`` tokens after ``prompt`` [B, T0] for the whole batch at once.

    ``cache``: "static" (prefill the prompt, then one token per step into a preallocated cache), "cat" (the
    same with a cache grown by torch.cat), or "none" (recompute the full prefix every step).
    """
    if prompt.dtype != torch.int64 or prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt: expected int64 [B, T0] with T0 >= 1, received {tuple(prompt.shape)} {prompt.dtype}")
    check_int("steps", steps, 0)
    if cache not in ("static", "cat", "none"):
        raise ValueError(f"cache: expected 'static', 'cat' or 'none', received {cache!r}")
    out = torch.empty(prompt.shape[0], prompt.shape[1] + steps, dtype=torch.int64, device=prompt.device)
    out[:, :prompt.shape[1]] = prompt
    T0 = prompt.shape[1]
    if steps == 0:
        return out
    if cache == "none":
        for t in range(steps):
            out[:, T0 + t] = model(out[:, :T0 + t])[:, -1].argmax(-1)
        return out
    kv = model.new_cache(prompt.shape[0], T0 + steps, kind=cache)
    logits = model(prompt, cache=kv)[:, -1]
    for t in range(steps):
        out[:, T0 + t] = logits.argmax(-1)
        if t + 1 < steps:
            logits = model(out[:, T0 + t:T0 + t + 1], cache=kv)[:, -1]
    return out


def bench_cases(quick: bool = False) -> list:
    """``make bench``: naive vs SDPA attention; greedy generation with a static cache, a cat cache, no cache."""
    from kernels.bench import Case

    cases = []
    g = torch.Generator().manual_seed(0)
    for B, H, n, dh in ((128, 4, 32, 16), (1, 4, 512, 32)) if not quick else ((8, 4, 32, 16),):
        q, k, v = (torch.randn(B, H, n, dh, generator=g) for _ in range(3))
        cases.append(Case(f"causal attention B={B} H={H} n={n} d_h={dh}",
                          {"naive (explicit mask)": lambda q=q, k=k, v=v: naive_attention(q, k, v, True),
                           "SDPA": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=True)}))
    with torch.random.fork_rng():                      # a fixed model without touching the caller's torch RNG
        torch.manual_seed(0)
        model = TinyGPT(64, 64, 2, 4).eval()
    steps = 32 if quick else 256
    prompt = torch.randint(0, 64, (8, 8), generator=g)
    cases.append(Case(f"greedy generation of {steps} tokens, batch 8, 2-layer d=64 model",
                      {"no cache (recompute)": lambda: generate_greedy(model, prompt, steps, cache="none"),
                       "cat cache": lambda: generate_greedy(model, prompt, steps, cache="cat"),
                       "static cache": lambda: generate_greedy(model, prompt, steps, cache="static")}))
    return cases


# --- A Llama-style variant (WebLLM chapter): SwiGLU MLP, no biases in the block's linears, and a tied embedding
# whose transpose is the LM head, reached through a method so that a quantized table can stand in for both.

class SwiGLU(nn.Module):
    """Llama's MLP (Shazeer 2020): down(silu(gate(z)) * up(z)), no biases.                        (Eq. 6)"""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        check_int("dim", dim, 1)
        check_int("hidden", hidden, 1)
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class TiedEmbedding(nn.Embedding):
    """The token table, read two ways: rows for the input (``forward``) and its transpose as the LM head
    (``logits``), as in models that tie the two (Press & Wolf 2017; Llama 3.2, Phi, Gemma)."""

    def logits(self, h: Tensor) -> Tensor:
        """h [..., dim] -> logits [..., vocab] = h E^T."""
        return h @ self.weight.t()


class TinyLlama(TinyGPT):
    """A Llama-style decoder: tied embedding -> blocks (RMSNorm, RoPE attention, SwiGLU) -> RMSNorm -> head.

    The blocks are this module's :class:`Block` with the MLP swapped for :class:`SwiGLU` (attention has no
    biases already). ``forward`` and ``new_cache`` behave as :class:`TinyGPT`'s, and :func:`generate_greedy`
    accepts either; the head is ``embed.logits``, so a quantized table (``kernels.quant.QEmbedding``) serves the
    input lookup and the LM head from one copy, as MLC-LLM's q4f16_1 does for tied models.
    """

    def __init__(self, vocab: int, dim: int, layers: int, heads: int, hidden: int | None = None) -> None:
        nn.Module.__init__(self)   # TinyGPT's forward and new_cache are reused; its head_weight tie is not
        for name, v in (("vocab", vocab), ("dim", dim), ("layers", layers), ("heads", heads)):
            check_int(name, v, 1)
        hidden = 3 * dim if hidden is None else check_int("hidden", hidden, 1)
        self.vocab, self.dim, self.hidden = vocab, dim, hidden
        self.embed: nn.Module = TiedEmbedding(vocab, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        for block in self.blocks:
            block.mlp = SwiGLU(dim, hidden)
        self.norm = RMSNorm(dim)

    def logits(self, h: Tensor) -> Tensor:
        """The LM head is the token table read as a matrix, so that a quantized table serves both uses."""
        return self.embed.logits(h)
