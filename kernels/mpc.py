"""Two-party additive secret sharing over the ring Z_{2^64}: the substrate of the Centaur chapter.

Paper: J. Luo, G. Chen, Y. Zhang, S. Liu, H. Wang, Y. Yu, X. Zhou, Y. Qi, Z. Xu, "Centaur: Bridging the
Impossible Trinity of Privacy, Efficiency, and Performance in Privacy-Preserving Transformer Inference",
arXiv 2412.10652 (2024). The paper builds on CrypTen-style 2PC; what is here is that standard machinery
(Knott et al., NeurIPS 2021; SecureML, Mohassel & Zhang 2017), reconstructed, not the paper's code.

Ring values are ``torch.int64`` tensors; int64 addition, subtraction and multiplication wrap modulo 2^64.

    enc(x) = round(x * 2^f),   dec(z) = z / 2^f  (z read as signed)             fixed point     (Eq. 1)
    [[x]] = (x0, x1),          x0 uniform in Z_{2^64},  x1 = x - x0 mod 2^64     sharing         (Eq. 2)
    trunc: P0 keeps x0 >> f, P1 keeps -((-x1) >> f)                             local truncation (Eq. 3)
    Beaver: with a dealt triple (A, B, C = A B), open E = X - A and F = Y - B;
            party i keeps  Z_i = C_i + E B_i + A_i F + [i = 0] E F,  then trunc                  (Eq. 4)

Local truncation is off by one unit in the last place (ulp, 2^-f) about half the time, and catastrophically
wrong with probability about |z| / 2^64 per element, where z is the encoded value before truncation.

The channel counts what a real network would carry: 8 bytes per ring element and one round per
synchronous exchange (exchanges inside ``Channel.parallel()`` share one round); the dealer's traffic is
counted apart, as offline (input-independent) preprocessing. It also records each party's *view*: every
tensor a party receives or computes, as a ``View`` tagged with the party, its kind ("masked": a uniform share
or a Beaver difference; "opened": a plaintext value revealed to it; "computed": a plaintext value it computed;
"input"/"output": the client's own), the layer type and the block. Plaintext entries keep their value (as
float64); masked ones keep only their shape unless ``Channel(keep_masked=True)`` (then their ring value).

The CrypTen approximations used by a pure-SMPC baseline are here too: exp by the limit
(1 + x / 2^n)^(2^n), reciprocal and inverse square root by Newton-Raphson from CrypTen's initial guesses,
and erf by its Taylor series (CrypTen's ``configs/default.yaml``).

``limb_matmul`` is an exact int64 (mod 2^64) matrix product from float64 BLAS: split each operand into four
16-bit limbs, X = sum_i X_i 2^(16 i), so that

    X Y mod 2^64 = sum_{s=0..3} 2^(16 s) sum_{i+j=s} X_i Y_j,                                    (Eq. 5)

each limb product being an exact float64 GEMM while (s + 1) K 2^32 < 2^53; when one operand is small
(a fixed-point weight, |w| < 2^24) only the other is split: 4 GEMMs. ``ring_matmul`` is the one the
protocols use; it is torch's own int64 matmul, which wraps modulo 2^64 exactly like Eq. 5 (tested).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from kernels._validate import describe

FRAC_BITS = 16       # CrypTen's default precision_bits
RING_BITS = 64
ELEMENT_BYTES = 8
_LIMB_BITS = 16
_EXACT = 2 ** 53     # float64 represents every integer below this exactly


# --------------------------------------------------------------------------------------------- validation
def _check_ring(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor) or t.dtype != torch.int64:
        raise ValueError(f"{name}: expected a torch.int64 ring tensor, received {describe(t)}")
    return t


def _check_frac(frac_bits: int) -> int:
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or not 0 <= frac_bits <= 40:
        raise ValueError(f"frac_bits: expected an int in [0, 40], received {frac_bits!r}")
    return frac_bits


def _check_matmul(a: Tensor, b: Tensor) -> None:
    _check_ring("a", a)
    _check_ring("b", b)
    if a.dim() < 2 or b.dim() < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"a, b: expected shapes (..., m, k) and (..., k, n), received {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


# ------------------------------------------------------------------------------------- fixed point (Eq. 1)
def encode(x: Tensor, frac_bits: int = FRAC_BITS) -> Tensor:
    """Eq. 1: round(x * 2^f) as an int64 ring tensor. Raises ValueError if |x| 2^f >= 2^62 or x is not finite."""
    _check_frac(frac_bits)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = f"{x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x: expected a floating-point tensor to encode, received {got}")
    x = x.double()
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError("x: expected finite values to encode, received nan or inf")
    limit = 2.0 ** (62 - frac_bits)
    if x.numel() and float(x.abs().max()) >= limit:
        raise ValueError(f"x: scale overflow, expected |x| < 2^{62 - frac_bits} = {limit:.3g} at frac_bits="
                         f"{frac_bits}, received max |x| = {float(x.abs().max()):.3g}")
    return torch.round(x * 2.0 ** frac_bits).to(torch.int64)


def decode(z: Tensor, frac_bits: int = FRAC_BITS) -> Tensor:
    """Eq. 1: the signed ring value z / 2^f as float64."""
    _check_ring("z", z)
    _check_frac(frac_bits)
    return z.double() / 2.0 ** frac_bits


# ---------------------------------------------------------------------------------------- sharing (Eq. 2)
def random_ring(shape: Sequence[int], gen: torch.Generator) -> Tensor:
    """Uniform elements of Z_{2^64} (all 64 bits random) as int64: two 32-bit draws combined."""
    if not isinstance(gen, torch.Generator):
        raise ValueError(f"gen: expected a torch.Generator, received {type(gen).__name__}")
    hi = torch.randint(0, 2 ** 32, tuple(shape), generator=gen, dtype=torch.int64)
    lo = torch.randint(0, 2 ** 32, tuple(shape), generator=gen, dtype=torch.int64)
    return (hi << 32) | lo


@dataclass
class Shared:
    """[[x]] = (s0, s1), held by P0 and P1; x = s0 + s1 mod 2^64. Local operations only (no channel)."""

    s0: Tensor
    s1: Tensor

    def __post_init__(self) -> None:
        _check_ring("s0", self.s0)
        _check_ring("s1", self.s1)
        if self.s0.shape != self.s1.shape:
            raise ValueError(f"s1: expected the shape of s0 {tuple(self.s0.shape)}, received {tuple(self.s1.shape)}")

    @property
    def shape(self) -> torch.Size:
        return self.s0.shape

    def numel(self) -> int:
        return self.s0.numel()

    def __add__(self, other: "Shared") -> "Shared":
        if not isinstance(other, Shared):
            raise ValueError(f"other: expected Shared, received {type(other).__name__}; use add_public for public values")
        return Shared(self.s0 + other.s0, self.s1 + other.s1)

    def __sub__(self, other: "Shared") -> "Shared":
        if not isinstance(other, Shared):
            raise ValueError(f"other: expected Shared, received {type(other).__name__}; use add_public for public values")
        return Shared(self.s0 - other.s0, self.s1 - other.s1)

    def __neg__(self) -> "Shared":
        return Shared(-self.s0, -self.s1)

    def add_public(self, c: Tensor) -> "Shared":
        """[[x + c]] for a public ring value c (only P0 adds it)."""
        _check_ring("c", c)
        s0 = self.s0 + c
        return Shared(s0, self.s1.expand_as(s0).clone() if s0.shape != self.s1.shape else self.s1)

    def mul_int(self, k: int | Tensor) -> "Shared":
        """[[k x]] for a public integer k (no truncation: the scale is unchanged)."""
        if isinstance(k, Tensor):
            _check_ring("k", k)
        elif isinstance(k, bool) or not isinstance(k, int):
            raise ValueError(f"k: expected an int or an int64 tensor, received {type(k).__name__}")
        return Shared(self.s0 * k, self.s1 * k)

    def map(self, fn: Callable[[Tensor], Tensor]) -> "Shared":
        """Apply the same local, linear reshaping (view, transpose, index, sum) to both shares."""
        return Shared(fn(self.s0), fn(self.s1))


def share(z: Tensor, gen: torch.Generator) -> Shared:
    """Eq. 2: split a ring tensor into two additive shares, s0 uniform."""
    _check_ring("z", z)
    r = random_ring(z.shape, gen)
    return Shared(r, z - r)


def reconstruct(x: Shared) -> Tensor:
    """Eq. 2: s0 + s1 mod 2^64 (what the party that receives both shares computes)."""
    if not isinstance(x, Shared):
        raise ValueError(f"x: expected Shared, received {type(x).__name__}")
    return x.s0 + x.s1


def trunc(x: Shared, frac_bits: int = FRAC_BITS) -> Shared:
    """Eq. 3: SecureML local truncation by f bits (divides the shared value by 2^f, up to 1 ulp)."""
    if not isinstance(x, Shared):
        raise ValueError(f"x: expected Shared, received {type(x).__name__}")
    _check_frac(frac_bits)
    return Shared(x.s0 >> frac_bits, -((-x.s1) >> frac_bits))


# ------------------------------------------------------------------------------------------------ channel
PARTIES = ("P0", "P1", "P2")
VIEW_KINDS = ("masked", "opened", "computed", "derived", "input", "output")


@dataclass(frozen=True)
class View:
    """One tensor a party received or computed: who, what kind, which activation, where, and its value (float64
    for plaintext kinds; for a masked one its ring value if the channel keeps masked values, else None)."""

    party: str
    kind: str
    key: str
    label: str
    tag: str
    block: int | None
    shape: tuple[int, ...]
    value: Tensor | None

    @property
    def name(self) -> str:
        """The plaintext run's activation name: key plus block number (``scores0``), or key alone."""
        return self.key if self.block is None else f"{self.key}{self.block}"


class Channel:
    """Counts online bytes and rounds (per tag) and the dealer's offline bytes.

    ``send`` is one synchronous exchange: one round, 8 bytes per element sent by either party. Sends inside
    ``with chan.parallel():`` are independent messages that travel together: they share one round.
    ``with chan.tag("attention"):`` files everything sent inside under that label.
    """

    def __init__(self, keep_masked: bool = False) -> None:
        if not isinstance(keep_masked, bool):
            raise ValueError(f"keep_masked: expected a bool, received {type(keep_masked).__name__}")
        self.bytes: dict[str, int] = {}
        self.rounds: dict[str, int] = {}
        self.offline_bytes: dict[str, int] = {}
        self.views: list[View] = []
        self.keep_masked = keep_masked
        self._tags: list[str] = ["other"]
        self._blocks: list[int | None] = [None]
        self._parallel_depth = 0
        self._parallel_sent = False

    @property
    def current(self) -> str:
        return self._tags[-1]

    @contextmanager
    def tag(self, name: str) -> Iterator["Channel"]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty str, received {name!r}")
        self._tags.append(name)
        try:
            yield self
        finally:
            self._tags.pop()

    @contextmanager
    def block(self, index: int | None) -> Iterator["Channel"]:
        """Views recorded inside are tagged with this Transformer block (None: outside any block)."""
        if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
            raise ValueError(f"index: expected an int >= 0 or None, received {index!r}")
        self._blocks.append(index)
        try:
            yield self
        finally:
            self._blocks.pop()

    def see(self, party: str, kind: str, key: str, label: str, value: Tensor, frac_bits: int = FRAC_BITS) -> None:
        """Record that ``party`` received or computed ``value`` (a ring tensor is decoded first).

        ``key`` names the activation it corresponds to (the plaintext run's name, without the block number),
        ``label`` is what a reader reads. Masked values keep only their shape unless ``keep_masked`` (then
        their ring value, int64); plaintext values are kept as float64.
        """
        if party not in PARTIES:
            raise ValueError(f"party: expected one of {PARTIES}, received {party!r}")
        if kind not in VIEW_KINDS:
            raise ValueError(f"kind: expected one of {VIEW_KINDS}, received {kind!r}")
        if not isinstance(value, Tensor):
            raise ValueError(f"value: expected a tensor, received {describe(value)}")
        if kind == "masked":
            val = value.clone() if self.keep_masked else None               # a ring element, kept as such
        else:
            val = decode(value, frac_bits) if value.dtype == torch.int64 else value.detach().double()
        self.views.append(View(party, kind, key, label, self.current, self._blocks[-1], tuple(value.shape), val))

    def view_of(self, party: str, kind: str | None = None) -> list["View"]:
        """The recorded views of one party (optionally of one kind), in the order they happened."""
        return [v for v in self.views if v.party == party and (kind is None or v.kind == kind)]

    @contextmanager
    def parallel(self) -> Iterator["Channel"]:
        outer = self._parallel_depth == 0
        if outer:
            self._parallel_sent = False
            tag = self.current
        self._parallel_depth += 1
        try:
            yield self
        finally:
            self._parallel_depth -= 1
            if outer and self._parallel_sent:
                self.rounds[tag] = self.rounds.get(tag, 0) + 1

    def send(self, *tensors: Tensor) -> None:
        n = sum(int(t.numel()) for t in tensors)
        tag = self.current
        self.bytes[tag] = self.bytes.get(tag, 0) + ELEMENT_BYTES * n
        if self._parallel_depth:
            self._parallel_sent = True
        else:
            self.rounds[tag] = self.rounds.get(tag, 0) + 1

    def offline(self, *tensors: Tensor) -> None:
        n = sum(int(t.numel()) for t in tensors)
        self.offline_bytes[self.current] = self.offline_bytes.get(self.current, 0) + ELEMENT_BYTES * n

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    @property
    def total_rounds(self) -> int:
        return sum(self.rounds.values())

    @property
    def total_offline_bytes(self) -> int:
        return sum(self.offline_bytes.values())


class Dealer:
    """A trusted dealer (CrypTen's "TTP" provider): Beaver triples and square pairs, as shares.

    Everything it ships is counted as offline traffic on ``chan`` (both parties' shares).
    """

    def __init__(self, gen: torch.Generator, chan: Channel) -> None:
        if not isinstance(gen, torch.Generator):
            raise ValueError(f"gen: expected a torch.Generator, received {type(gen).__name__}")
        if not isinstance(chan, Channel):
            raise ValueError(f"chan: expected a Channel, received {type(chan).__name__}")
        self.gen, self.chan = gen, chan

    def _deal(self, *values: Tensor) -> list[Shared]:
        out = [share(v, self.gen) for v in values]
        self.chan.offline(*[s for sh in out for s in (sh.s0, sh.s1)])
        for sh in out:
            self.chan.see("P0", "masked", "triple", "dealt triple share (offline)", sh.s0)
            self.chan.see("P1", "masked", "triple", "dealt triple share (offline)", sh.s1)
        return out

    def mul_triple(self, shape_x: Sequence[int], shape_y: Sequence[int]) -> list[Shared]:
        a, b = random_ring(shape_x, self.gen), random_ring(shape_y, self.gen)
        return self._deal(a, b, a * b)

    def matmul_triple(self, shape_x: Sequence[int], shape_y: Sequence[int]) -> list[Shared]:
        a, b = random_ring(shape_x, self.gen), random_ring(shape_y, self.gen)
        return self._deal(a, b, ring_matmul(a, b))

    def square_pair(self, shape: Sequence[int]) -> list[Shared]:
        a = random_ring(shape, self.gen)
        return self._deal(a, a * a)


# ----------------------------------------------------------------------------------------- communication
def open_shared(x: Shared, chan: Channel, key: str = "opened", label: str = "opened value",
                kind: str = "opened") -> Tensor:
    """Both parties send their share (one round, 2 numel elements); both learn x, recorded in both views as
    ``kind`` ("masked" when x is a Beaver difference X - A, uniform because A is)."""
    if not isinstance(x, Shared):
        raise ValueError(f"x: expected Shared, received {type(x).__name__}")
    chan.send(x.s0, x.s1)
    z = x.s0 + x.s1
    for party in ("P0", "P1"):
        chan.see(party, kind, key, label, z)
    return z


def reveal_to_p1(x: Shared, chan: Channel, key: str = "opened", label: str = "opened value",
                 frac_bits: int = FRAC_BITS) -> Tensor:
    """P0 sends its share to P1 (one round, numel elements); only P1 learns x (recorded as "opened")."""
    if not isinstance(x, Shared):
        raise ValueError(f"x: expected Shared, received {type(x).__name__}")
    chan.send(x.s0)
    z = x.s0 + x.s1
    chan.see("P1", "opened", key, label, z, frac_bits)
    return z


def reshare_from_p1(z: Tensor, gen: torch.Generator, chan: Channel, key: str = "reshared",
                    label: str = "share from P1") -> Shared:
    """P1 holds z in the clear, splits it and sends P0 its share (one round, numel elements); P0's view
    gains a uniform share ("masked")."""
    _check_ring("z", z)
    out = share(z, gen)
    chan.send(out.s0)
    chan.see("P0", "masked", key, label, out.s0)
    return out


# -------------------------------------------------------------------------------- products (Eqs. 3 and 4)
def mul_public(x: Shared, c: Tensor | float, frac_bits: int = FRAC_BITS) -> Shared:
    """[[x * c]] for a public real c (scalar or broadcastable tensor): local multiply by enc(c), then trunc."""
    if not isinstance(x, Shared):
        raise ValueError(f"x: expected Shared, received {type(x).__name__}")
    c_t = c if isinstance(c, Tensor) else torch.tensor(float(c), dtype=torch.float64)
    ce = encode(c_t, frac_bits)
    return trunc(Shared(x.s0 * ce, x.s1 * ce), frac_bits)


def matmul_public(x: Shared, w: Tensor, frac_bits: int = FRAC_BITS) -> Shared:
    """[[x W]] for a public fixed-point matrix W (already encoded): local on both shares, then trunc."""
    if not isinstance(x, Shared):
        raise ValueError(f"x: expected Shared, received {type(x).__name__}")
    _check_matmul(x.s0, w)
    return trunc(Shared(ring_matmul(x.s0, w), ring_matmul(x.s1, w)), frac_bits)


def beaver_mul(x: Shared, y: Shared, dealer: Dealer, chan: Channel, frac_bits: int = FRAC_BITS) -> Shared:
    """Eq. 4, element-wise with broadcasting: one round, 2 (numel x + numel y) elements; then trunc."""
    if not isinstance(x, Shared) or not isinstance(y, Shared):
        raise ValueError(f"x, y: expected Shared, received {type(x).__name__} and {type(y).__name__}")
    a, b, c = dealer.mul_triple(x.shape, y.shape)
    with chan.parallel():
        e = open_shared(x - a, chan, "beaver", "Beaver differences E = X - A, F = Y - B", "masked")
        f = open_shared(y - b, chan, "beaver", "Beaver differences E = X - A, F = Y - B", "masked")
    z0 = c.s0 + e * b.s0 + a.s0 * f + e * f
    z1 = c.s1 + e * b.s1 + a.s1 * f
    return trunc(Shared(z0, z1), frac_bits)


def beaver_square(x: Shared, dealer: Dealer, chan: Channel, frac_bits: int = FRAC_BITS) -> Shared:
    """[[x^2]] from a pair (a, a^2): open only E = x - a (one round, 2 numel elements); then trunc."""
    if not isinstance(x, Shared):
        raise ValueError(f"x: expected Shared, received {type(x).__name__}")
    a, a2 = dealer.square_pair(x.shape)
    e = open_shared(x - a, chan, "beaver", "Beaver differences E = X - A, F = Y - B", "masked")
    # x^2 = a^2 + 2 e a + e^2
    z0 = a2.s0 + 2 * e * a.s0 + e * e
    z1 = a2.s1 + 2 * e * a.s1
    return trunc(Shared(z0, z1), frac_bits)


def beaver_matmul(x: Shared, y: Shared, dealer: Dealer, chan: Channel, frac_bits: int = FRAC_BITS) -> Shared:
    """Eq. 4 for matrices (batched like torch.matmul): one round, 2 (numel x + numel y) elements; then trunc."""
    if not isinstance(x, Shared) or not isinstance(y, Shared):
        raise ValueError(f"x, y: expected Shared, received {type(x).__name__} and {type(y).__name__}")
    _check_matmul(x.s0, y.s0)
    a, b, c = dealer.matmul_triple(x.shape, y.shape)
    with chan.parallel():
        e = open_shared(x - a, chan, "beaver", "Beaver differences E = X - A, F = Y - B", "masked")
        f = open_shared(y - b, chan, "beaver", "Beaver differences E = X - A, F = Y - B", "masked")
    z0 = c.s0 + ring_matmul(e, b.s0) + ring_matmul(a.s0, f) + ring_matmul(e, f)
    z1 = c.s1 + ring_matmul(e, b.s1) + ring_matmul(a.s1, f)
    return trunc(Shared(z0, z1), frac_bits)


# ------------------------------------------------------------------- CrypTen approximations (pure SMPC)
def _const(value: float, like: Shared, frac_bits: int) -> Tensor:
    return encode(torch.full((), float(value), dtype=torch.float64), frac_bits).expand(like.shape)


def exp_limit(x: Shared, dealer: Dealer, chan: Channel, iterations: int = 8, frac_bits: int = FRAC_BITS) -> Shared:
    """exp(x) ~ (1 + x / 2^n)^(2^n), n squarings (CrypTen's default n = 8). Wrong for x < -2^n; keep x modest."""
    y = trunc(x, iterations).add_public(_const(1.0, x, frac_bits))  # x / 2^n by a shift, then + 1
    for _ in range(iterations):
        y = beaver_square(y, dealer, chan, frac_bits)
    return y


def reciprocal_nr(x: Shared, dealer: Dealer, chan: Channel, iterations: int = 10,
                  frac_bits: int = FRAC_BITS) -> Shared:
    """1 / x for x > 0 by Newton-Raphson y <- 2y - x y^2 from CrypTen's guess 3 exp(1 - 2x) + 0.003."""
    y = mul_public(exp_limit(x.mul_int(-2).add_public(_const(1.0, x, frac_bits)), dealer, chan, frac_bits=frac_bits),
                   3.0, frac_bits).add_public(_const(0.003, x, frac_bits))
    for _ in range(iterations):
        y2 = beaver_square(y, dealer, chan, frac_bits)
        y = y.mul_int(2) - beaver_mul(x, y2, dealer, chan, frac_bits)
    return y


def rsqrt_nr(x: Shared, dealer: Dealer, chan: Channel, iterations: int = 3, frac_bits: int = FRAC_BITS) -> Shared:
    """1 / sqrt(x) for x > 0 by Newton-Raphson y <- y (3 - x y^2) / 2 from CrypTen's guess
    2.2 exp(-(x / 2 + 0.2)) + 0.2 - x / 1024."""
    arg = mul_public(x, -0.5, frac_bits).add_public(_const(-0.2, x, frac_bits))
    y = mul_public(exp_limit(arg, dealer, chan, frac_bits=frac_bits), 2.2, frac_bits)
    y = (y - trunc(x, 10)).add_public(_const(0.2, x, frac_bits))
    for _ in range(iterations):
        xy2 = beaver_mul(x, beaver_square(y, dealer, chan, frac_bits), dealer, chan, frac_bits)
        y = trunc(beaver_mul(y, (-xy2).add_public(_const(3.0, x, frac_bits)), dealer, chan, frac_bits), 1)
    return y


def erf_taylor(x: Shared, dealer: Dealer, chan: Channel, terms: int = 8, frac_bits: int = FRAC_BITS) -> Shared:
    """erf(x) ~ 2 / sqrt(pi) sum_{k < terms} (-1)^k x^(2k+1) / (k! (2k+1)); diverges for |x| above about 2.5."""
    x2 = beaver_square(x, dealer, chan, frac_bits)
    power, out = x, x
    for k in range(1, terms):
        power = beaver_mul(power, x2, dealer, chan, frac_bits)
        out = out + mul_public(power, (-1) ** k / (math.factorial(k) * (2 * k + 1)), frac_bits)
    return mul_public(out, 2.0 / math.sqrt(math.pi), frac_bits)


def gelu_erf(x: Shared, dealer: Dealer, chan: Channel, terms: int = 8, frac_bits: int = FRAC_BITS) -> Shared:
    """GeLU(x) = x (1 + erf(x / sqrt 2)) / 2 with the Taylor erf (CrypTen's exact-GeLU path)."""
    e = erf_taylor(mul_public(x, 1 / math.sqrt(2), frac_bits), dealer, chan, terms, frac_bits)
    return trunc(beaver_mul(x, e.add_public(_const(1.0, x, frac_bits)), dealer, chan, frac_bits), 1)


# ------------------------------------------------------------------------------- ring matmul (Eq. 5)
def ring_matmul(a: Tensor, b: Tensor) -> Tensor:
    """a @ b modulo 2^64 with torch's int64 matmul (batched like torch.matmul)."""
    _check_matmul(a, b)
    return torch.matmul(a, b)


def _limbs(a: Tensor) -> Tensor:
    """The four unsigned 16-bit limbs of int64 a as float64, limb index first: a = sum_i L[i] 2^(16 i)."""
    return a.contiguous().view(torch.uint16).reshape(*a.shape, 4).to(torch.float64).movedim(-1, 0)


def limb_matmul(a: Tensor, b: Tensor) -> Tensor:
    """Eq. 5: a @ b modulo 2^64, bit-exact, from float64 GEMMs on 16-bit limbs (batched like torch.matmul).

    If every |b| < 2^24 (a fixed-point weight) only a is split: 4 GEMMs; otherwise both are: 10 limb
    products in 4 GEMMs, one per output shift s. The inner dimension is chunked to keep every partial sum
    below 2^53.
    """
    _check_matmul(a, b)
    k = a.shape[-1]
    bmax = int(b.abs().max()) if b.numel() else 0
    small = b.numel() > 0 and int(b.min()) > -(2 ** 24) and bmax < 2 ** 24
    per_term = 2 ** _LIMB_BITS * max(bmax, 1) if small else 4 * 2 ** (2 * _LIMB_BITS)
    chunk = max(1, min(k, (_EXACT - 1) // per_term))
    out: Tensor | None = None
    for k0 in range(0, k, chunk):
        ac, bc = a[..., k0:k0 + chunk], b[..., k0:k0 + chunk, :]
        part = _limb_small(ac, bc) if small else _limb_general(ac, bc)
        out = part if out is None else out + part
    if out is None:  # k == 0
        return torch.zeros(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]),
                           dtype=torch.int64)
    return out


def _limb_small(a: Tensor, b: Tensor) -> Tensor:
    la, bf = _limbs(a), b.to(torch.float64)
    c = torch.matmul(la, bf.unsqueeze(0)).to(torch.int64)     # [4, ..., m, n], each exact
    return c[0] + (c[1] << 16) + (c[2] << 32) + (c[3] << 48)


def _limb_general(a: Tensor, b: Tensor) -> Tensor:
    la, lb = _limbs(a), _limbs(b)
    out: Tensor | None = None
    for s in range(4):
        left = torch.cat([la[i] for i in range(s + 1)], dim=-1)        # [..., m, (s+1) k]
        right = torch.cat([lb[s - i] for i in range(s + 1)], dim=-2)   # [..., (s+1) k, n]
        c = torch.matmul(left, right).to(torch.int64) << (16 * s)
        out = c if out is None else out + c
    assert out is not None
    return out


# ------------------------------------------------------------------------------------------- benchmark
def bench_cases(quick: bool = False, shapes: Sequence[tuple[int, int, int]] | None = None) -> list:
    """``make bench``: exact ring matmul, limb GEMMs (Eq. 5) vs torch's and numpy's int64 matmul, float64 BLAS
    as the lower bound; for a uniform x uniform product (Beaver) and a share x public fixed-point weight.
    ``shapes``: the (m, k, n) to time (default: a few, or one small one when ``quick``)."""
    from kernels.bench import Case

    if shapes is None:
        shapes = [(128, 64, 64)] if quick else [(512, 512, 512), (4096, 64, 256)]
    gen = torch.Generator().manual_seed(0)
    cases = []
    for m, k, n in shapes:
        a = random_ring((m, k), gen)
        for kind in ("uniform", "weight"):
            b = random_ring((k, n), gen) if kind == "uniform" else torch.randint(-2 ** 20, 2 ** 20, (k, n), generator=gen)
            if not torch.equal(limb_matmul(a, b), ring_matmul(a, b)):
                raise AssertionError("limb_matmul is not bit-exact")
            an, bn = a.numpy(), b.numpy()
            af, bf = a.double(), b.double()
            fns = {"numpy int64 @": lambda an=an, bn=bn: an @ bn,
                   "torch int64 matmul": lambda a=a, b=b: torch.matmul(a, b),
                   "limb_matmul (float64 BLAS)": lambda a=a, b=b: limb_matmul(a, b),
                   "float64 GEMM (not exact)": lambda af=af, bf=bf: af @ bf}
            cases.append(Case(f"ring matmul {m}x{k}x{n}, b {'uniform in Z_2^64' if kind == 'uniform' else 'fixed-point weight'}",
                              fns, baseline="numpy int64 @", flops=2.0 * m * k * n))
    return cases
