"""A small pre-norm decoder-only transformer, shared by the language chapters (Over-Tokenized Transformer
first; RELAY and WebLLM reuse it).

Block (Vaswani et al. 2017, pre-norm as in GPT-2/LLaMA):

    h = x + Attn(RMSNorm(x)),   y = h + MLP(RMSNorm(h))
    Attn(z) = softmax(Q K^T / sqrt(d_h) + mask) V,  Q, K rotated by RoPE (Su et al. 2021)          (Eq. 1)
    RMSNorm(z) = z / sqrt(mean(z^2) + eps) * g                                                    (Eq. 2)
    RoPE: (q_{2i}, q_{2i+1}) rotated by angle p * base^{-2i/d_h} at position p                      (Eq. 3)

Attention goes through ``torch.nn.functional.scaled_dot_product_attention``; ``naive_attention`` is the
explicit-softmax reference with the mask materialised. Positions are an explicit argument so that a
static KV cache (decoding one token at position p) can be added without changing the block's API.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


def naive_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    """Eq. 1 written out: scores, a materialised -inf mask above the diagonal, softmax, weighted sum."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        Tq, Tk = q.shape[-2], k.shape[-2]
        mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"dim, heads: expected dim divisible by heads with an even head size, received {dim}, {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, positions: Tensor, causal: bool = True, naive: bool = False) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)   # [B, H, T, d_h]
        cos, sin = rope_angles(positions, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = naive_attention(q, k, v, causal) if naive else F.scaled_dot_product_attention(q, k, v, is_causal=causal)
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

    def forward(self, x: Tensor, positions: Tensor, causal: bool = True, naive: bool = False) -> Tensor:
        x = x + self.attn(self.norm1(x), positions, causal, naive)
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    """Decoder-only language model: input embedding -> blocks -> RMSNorm -> head tied to the token embedding.

    ``embed`` replaces the plain ``nn.Embedding(vocab, dim)`` (e.g. ``kernels.ngram.OverEncoding``); the head
    is tied to its ``wte`` if it has one, else to its ``weight``.
    """

    def __init__(self, vocab: int, dim: int, layers: int, heads: int, embed: nn.Module | None = None) -> None:
        super().__init__()
        for name, v in (("vocab", vocab), ("dim", dim), ("layers", layers), ("heads", heads)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, received {v!r}")
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

    def forward(self, tokens: Tensor, causal: bool = True, naive: bool = False) -> Tensor:
        if tokens.dtype != torch.int64 or tokens.ndim != 2:
            raise ValueError(f"tokens: expected int64 [B, T], received {tuple(tokens.shape)} {tokens.dtype}")
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, positions, causal, naive)
        return self.norm(x) @ self.head_weight.t()

    def non_embedding_parameters(self) -> int:
        """Parameters outside the input tables (blocks, final norm, n-gram projections), the usual size measure."""
        tables = {id(p) for m in self.embed.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in tables)
