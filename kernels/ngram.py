"""Hashed n-gram input embeddings: Over-Encoding (Huang et al., "Over-Tokenized Transformer: Vocabulary is
Generally Worth Scaling", ICML 2025, arXiv 2501.16975, Eqs. 1-5 and Appendix A).

With base tokens x_i in [0, V) and zeros before the sequence start, the order-j n-gram code at position i is

    c_j(i) = x_i + x_{i-1} V + ... + x_{i-j+1} V^{j-1}                                       (Eq. 1)

(current token least significant; causal). Over-Encoding with largest order n and k slices per order has
G = k (n - 1) hashed tables; table iota = (j - 2) k + s has modulus and row count M_iota = m + 2 iota, width
d_s = D / G, and a projection W_iota in R^{d_s x D}:

    h_iota(i) = c_j(i) mod M_iota                                                             (Eq. 3)
    e_i = ( E_0[x_i] + sum_iota E_iota[h_iota(i)] W_iota ) / (1 + G)                          (Eq. 5, App. A)

Ids are computed by modular Horner over the j most recent tokens, oldest first:

    acc <- 0;  for x in (x_{i-j+1}, ..., x_{i-1}, x_i):  acc <- (acc * (V mod M) + x) mod M

which ends at c_j(i) mod M because c_j(i) = ((x_{i-j+1} V + x_{i-j+2}) V + ...) V + x_i. Every intermediate is
below M * V < 2^62, so there is no int64 overflow for any n (the paper's pseudo-code multiplies x V^{j-1}
directly, which overflows for n >= 4 at V ~ 1e5).

Shapes through :class:`OverEncoding`, for a batch of B sequences of T tokens:

    tokens [B, T]  --ngram_ids-->  row ids [B, T, G]  (+ row offsets of the flat table)
                   --table------>  hashed rows [B, T, G, d_s]  --flatten-->  [B, T, G * d_s]
                   --proj------->  [B, T, D]  (+ E_0[x_i], then / (1 + G))  =  e_i of Eq. 5

The fast embedding keeps all tables in **one flat table** (row offsets sum_{<iota} M) and all projections in
**one** Linear(G d_s -> D) (the block-stacked W, biases summed): one gather and one GEMM instead of G of each.
``NaiveOverEncoding`` is the Appendix-A form (G Embeddings and G Linears) used as the test reference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kernels._validate import check_int


def ngram_moduli(m: int, n: int, k: int) -> list[int]:
    """M_iota = m + 2 iota for the G = k (n - 1) tables (Appendix A)."""
    check_int("m", m, 1)
    check_int("n", n, 2)
    check_int("k", k, 1)
    return [m + 2 * i for i in range(k * (n - 1))]


def _check_tokens(tokens: Tensor, vocab: int) -> None:
    if not isinstance(tokens, Tensor) or tokens.dtype != torch.int64 or tokens.ndim != 2:
        got = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, Tensor) else type(tokens).__name__
        raise ValueError(f"tokens: expected an int64 tensor of shape [B, T], received {got}")
    if tokens.numel() and tokens.device.type != "meta" and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(f"tokens: expected ids in [0, {vocab}), received min {int(tokens.min())}, "
                         f"max {int(tokens.max())}")


def ngram_ids(tokens: Tensor, vocab: int, n: int, k: int, moduli: list[int]) -> Tensor:
    """Row ids h_iota(i) of Eq. 3 for every position and table: int64 [B, T, G], G = k (n - 1).

    ``moduli`` gives M_iota per table (normally :func:`ngram_moduli`; a chapter may override them, e.g. with
    multiples of V for the hash-conflict control).
    """
    check_int("vocab", vocab, 2)
    check_int("n", n, 2)
    check_int("k", k, 1)
    _check_tokens(tokens, vocab)
    G = k * (n - 1)
    if not isinstance(moduli, (list, tuple)) or len(moduli) != G or any(check_int("moduli[]", M, 1) * vocab >= 2**62 for M in moduli):
        raise ValueError(f"moduli: expected {G} ints >= 1 with M * vocab < 2**62, received {moduli!r}")
    mods = torch.tensor(moduli, dtype=torch.int64, device=tokens.device).view(n - 1, k)  # [order, slice]
    return torch.cat([_code_mod(tokens, vocab, j, mods[j - 2]) for j in range(2, n + 1)], dim=-1)


def _code_mod(tokens: Tensor, vocab: int, j: int, M: Tensor) -> Tensor:
    """c_j(i) mod M for a vector of moduli M [k] -> [B, T, k] (Eqs. 1 and 3), by modular Horner from the
    oldest of the j most recent tokens to the current one: acc <- (acc (V mod M) + x) mod M < M."""
    T = tokens.shape[1]
    acc = torch.zeros(*tokens.shape, M.numel(), dtype=torch.int64, device=tokens.device)
    for shift in range(j - 1, -1, -1):
        prev = torch.nn.functional.pad(tokens, (shift, 0))[:, :T]     # x_{i-shift}, zeros before the start
        acc = (acc * (vocab % M) + prev.unsqueeze(-1)) % M
    return acc


def ngram_ids_reference(tokens: Tensor, vocab: int, n: int, k: int, moduli: list[int]) -> Tensor:
    """Slow, obvious oracle: exact Python integers for Eq. 1, then mod M_iota."""
    B, T = tokens.shape
    G = k * (n - 1)
    out = torch.empty(B, T, G, dtype=torch.int64)
    x = tokens.tolist()
    for b in range(B):
        for i in range(T):
            for j in range(2, n + 1):
                c = sum((x[b][i - a] if i - a >= 0 else 0) * vocab**a for a in range(j))
                for s in range(k):
                    iota = (j - 2) * k + s
                    out[b, i, iota] = c % moduli[iota]
    return out


class OverEncoding(nn.Module):
    """Eq. 5: token embedding plus G hashed n-gram embeddings, one flat table and one projection."""

    def __init__(self, vocab: int, dim: int, n: int = 3, k: int = 1, m: int = 16381,
                 moduli: list[int] | None = None, sparse: bool = False) -> None:
        super().__init__()
        self.vocab, self.dim, self.n, self.k = check_int("vocab", vocab, 2), check_int("dim", dim, 1), check_int("n", n, 2), check_int("k", k, 1)
        self.G = k * (n - 1)
        if dim % self.G:
            raise ValueError(f"dim: expected a multiple of G = k (n - 1) = {self.G}, received {dim}")
        self.moduli = list(moduli) if moduli is not None else ngram_moduli(m, n, k)
        if len(self.moduli) != self.G:
            raise ValueError(f"moduli: expected {self.G} values, received {len(self.moduli)}")
        self.d_s = dim // self.G
        self.wte = nn.Embedding(vocab, dim)                                  # E_0, tie it to the output head
        # all E_iota, stacked; sparse=True gives a sparse gradient (only the rows looked up), for SparseAdam
        self.table = nn.Embedding(sum(self.moduli), self.d_s, sparse=sparse)
        self.proj = nn.Linear(self.G * self.d_s, dim)                        # all W_iota, block-stacked
        self.register_buffer("offsets", torch.tensor([0] + self.moduli[:-1]).cumsum(0), persistent=False)
        for t in (self.wte, self.table):
            nn.init.normal_(t.weight, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        ids = ngram_ids(tokens, self.vocab, self.n, self.k, self.moduli) + self.offsets    # [B, T, G] flat rows
        hashed = self.table(ids).flatten(-2)                                              # [B, T, G d_s]
        return (self.wte(tokens) + self.proj(hashed)) / (1 + self.G)

    def hashed_parameters(self) -> int:
        return self.table.weight.numel()


class NaiveOverEncoding(nn.Module):
    """Appendix A as written: G separate tables and G projections (the test reference and benchmark baseline)."""

    def __init__(self, vocab: int, dim: int, n: int = 3, k: int = 1, m: int = 16381,
                 moduli: list[int] | None = None, sparse: bool = False) -> None:
        super().__init__()
        self.vocab, self.n, self.k, self.G = vocab, n, k, k * (n - 1)
        self.moduli = list(moduli) if moduli is not None else ngram_moduli(m, n, k)
        d_s = dim // self.G
        self.wte = nn.Embedding(vocab, dim)
        self.tables = nn.ModuleList(nn.Embedding(M, d_s, sparse=sparse) for M in self.moduli)
        self.projs = nn.ModuleList(nn.Linear(d_s, dim) for _ in self.moduli)

    @classmethod
    def from_fast(cls, fast: OverEncoding) -> "NaiveOverEncoding":
        """The same function as ``fast``, split back into G tables and G projections."""
        naive = cls(fast.vocab, fast.dim, fast.n, fast.k, moduli=fast.moduli, sparse=fast.table.sparse)
        with torch.no_grad():
            naive.wte.weight.copy_(fast.wte.weight)
            for i, (t, p) in enumerate(zip(naive.tables, naive.projs)):
                lo = int(fast.offsets[i])
                t.weight.copy_(fast.table.weight[lo:lo + fast.moduli[i]])
                p.weight.copy_(fast.proj.weight[:, i * fast.d_s:(i + 1) * fast.d_s])
                p.bias.copy_(fast.proj.bias if i == 0 else torch.zeros_like(p.bias))
        return naive

    def forward(self, tokens: Tensor) -> Tensor:
        _check_tokens(tokens, self.vocab)
        x = self.wte(tokens)
        T = tokens.shape[1]
        code = tokens.clone()
        for j in range(2, self.n + 1):
            prev = torch.nn.functional.pad(tokens, (j - 1, 0))[:, :T]
            code = code + prev * self.vocab ** (j - 1)                 # exact int64 (fine for small V, n)
            for s in range(self.k):
                i = (j - 2) * self.k + s
                x = x + self.projs[i](self.tables[i](code % self.moduli[i]))
        return x / (1 + self.G)


def bench_cases(quick: bool = False) -> list:
    """``make bench``: the Over-Encoding layer, forward+backward, Appendix-A naive vs fused vs one
    ``nn.Embedding`` with as many rows as all hashed tables, with dense and with sparse table gradients. The work
    counted for the roofline columns: the GEMM FLOPs (``FlopCounterMode``, the same for both forms) and, with dense
    gradients, the bytes of the zeroed table gradient (a lower bound on what the step writes)."""
    from torch.utils.flop_counter import FlopCounterMode

    from kernels.bench import Case, Target

    B, T, m = (8, 64, 16381) if quick else (32, 64, 65521)
    configs = [(64, 3, 1, False)] if quick else [(64, 3, 1, False), (64, 3, 1, True), (256, 3, 1, False),
                                                 (256, 3, 1, True), (256, 3, 4, True)]
    cases = []
    for D, n, k, sparse in configs:
        with torch.random.fork_rng():                       # module weights from a seeded fork, not the global state
            torch.manual_seed(D + k * (n - 1))
            fast = OverEncoding(256, D, n=n, k=k, m=m, sparse=sparse)
            naive = NaiveOverEncoding.from_fast(fast)
            rows = sum(fast.moduli)
            big = nn.Embedding(rows, D, sparse=sparse)
        tokens = torch.randint(1, 256, (B, T), generator=torch.Generator().manual_seed(0))
        flat_ids = torch.randint(0, rows, (B, T), generator=torch.Generator().manual_seed(1))

        def fwd_bwd(module: nn.Module, x: Tensor) -> None:
            module.zero_grad(set_to_none=True)
            module(x).sum().backward()

        with FlopCounterMode(display=False) as counter:                # the GEMMs, forward and backward
            fwd_bwd(fast, tokens)
        gemm = float(counter.get_total_flops())
        grad_bytes = float(fast.table.weight.numel() * fast.table.weight.element_size())   # the dense write

        cases.append(Case(f"Over-Encoding G={fast.G}, D={D}, m={m}, {'sparse' if sparse else 'dense'} table grads, "
                          f"{B}x{T} tokens, forward+backward",
                          {"naive (App. A)": lambda naive=naive: fwd_bwd(naive, tokens),
                           "fused": lambda fast=fast: fwd_bwd(fast, tokens),
                           f"nn.Embedding({rows}, {D})": lambda big=big, ids=flat_ids: fwd_bwd(big, ids),
                           **({} if sparse else {"floor: zeroed dense table gradient":
                                                 lambda w=fast.table.weight: torch.zeros_like(w)})},
                          baseline="naive (App. A)",
                          flops={"naive (App. A)": gemm, "fused": gemm},
                          bytes_moved=None if sparse else {"naive (App. A)": grad_bytes, "fused": grad_bytes,
                                                            "floor: zeroed dense table gradient": grad_bytes},
                          targets=[Target("fused", "naive (App. A)", 1.2, "dense table gradients: both paths write "
                                          "the same zeroed gradient bytes and run the same GEMM FLOPs; fusing "
                                          "saves only G - 1 lookups and launches, so ~1x is the ceiling" if not sparse
                                          else "one lookup and one projection instead of G of each")]))
    return cases
