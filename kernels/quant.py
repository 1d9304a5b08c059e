"""Weight-only group quantization in MLC-LLM's q4f16_1 layout, and a quantized linear layer: the format WebLLM
runs its models in (Ruan et al., "WebLLM: A High-Performance In-Browser LLM Inference Engine", arXiv 2412.15803;
the layout read from MLC-LLM's ``GroupQuantize``).

A weight W [N, K] (outputs, inputs) is cut into groups of G = 32 consecutive inputs. Each group shares one fp16
scale, and each weight becomes an unsigned b-bit code around a fixed offset m (no per-group zero point):

    m = 2^(b-1) - 1                                   (7 for b = 4, 127 for b = 8)             (Eq. 1)
    s_{n,g} = max_{j in g} |W_{n,j}| / m              (in fp16)                                 (Eq. 2)
    q_{n,j} = clamp(round(W_{n,j} / s_{n,g(j)} + m), 0, 2m)   (fp16, round half away from 0)     (Eq. 3)
    W^_{n,j} = (q_{n,j} - m) * s_{n,g(j)}                                                       (Eq. 4)

b = 4 is q4f16_1 (codes 0..14, code 15 unused); b = 8 is the same recipe with 8-bit codes ("q8" in the chapter).
Codes are packed 32/b per 32-bit word along K, lowest bits first ("NK" layout): ``q_weight`` [N, K*b/32] (uint32
bits, held in an int32 tensor because torch has no uint32 arithmetic) and ``q_scale`` [N, K/G] fp16. Storage is
b/8 + 2/G bytes per parameter: exactly 0.5625 (b = 4) and 1.0625 (b = 8) at G = 32.

The product y = x W^T with W^ of Eq. 4 splits into per-group terms:

    y_{m,n} = sum_g s_{n,g} * ( sum_{j in g} x_{m,j} q_{n,j}  -  m * sum_{j in g} x_{m,j} )      (Eq. 5)

so the offset costs one activation sum per group and the scales multiply K/G partial sums instead of K weights.
:func:`qlinear` computes Eq. 5 a few groups at a time (never a full dequantized or widened [N, K] matrix);
:func:`qlinear_reference` dequantizes (Eq. 4) and calls ``F.linear``. Arithmetic runs in fp32 on the CPU (the
chapter's "f16" is the storage of the scales): the conversion of Eqs. 2-3 is done in fp16 exactly as MLC-LLM's
converter does, the products of Eq. 4 are exact in fp32. A group of zeros gets scale 0 and code m (MLC-LLM
divides by zero there).

Peers: onnxruntime's ``com.microsoft::MatMulNBits`` (block 32, uint8 [N, K/32, 32*b/8] low nibble first, zero
point 8 by default for 4 bits, so :func:`to_matmulnbits` passes m explicitly) and PyTorch's private CPU kernel
``torch._weight_int4pack_mm_for_cpu`` (which computes (q - 8) * s + z, so z = s gives Eq. 4).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kernels._validate import check_int, describe

BITS = (4, 8)
_CHUNK = 1 << 20  # elements of widened codes (and of per-group partial sums) that qlinear holds at a time


def offset(bits: int) -> int:
    """m of Eq. 1."""
    if bits not in BITS:
        raise ValueError(f"bits: expected one of {BITS}, received {bits!r}")
    return 2 ** (bits - 1) - 1


@dataclass
class QuantizedWeight:
    """One weight in the q4f16_1 layout: packed codes, fp16 scales, and what is needed to read them."""

    q_weight: Tensor  # int32 [N, K * bits / 32], codes packed lowest bits first
    q_scale: Tensor   # float16 [N, K / group_size]
    bits: int
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.q_weight.shape[0], self.q_weight.shape[1] * 32 // self.bits

    def nbytes(self) -> int:
        """Bytes stored: 4 per packed word, 2 per scale."""
        return self.q_weight.numel() * 4 + self.q_scale.numel() * 2

    def bytes_per_param(self) -> float:
        n, k = self.shape
        return self.nbytes() / (n * k)

    def codes(self) -> Tensor:
        """The unpacked codes q [N, K] (uint8)."""
        return unpack_codes(self.q_weight, self.bits)

    def dequantize(self) -> Tensor:
        return dequantize(self)


def _check_layout(bits: int, group_size: int, k: int) -> None:
    offset(bits)
    check_int("group_size", group_size, 1)
    per_word = 32 // bits
    if group_size % per_word:
        raise ValueError(f"group_size: expected a multiple of {per_word} (codes per 32-bit word at {bits} bits), "
                         f"received {group_size}")
    if k % group_size:
        raise ValueError(f"w: expected the input size K to be a multiple of group_size {group_size}, received K = {k}")


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Codes [N, K] (integers in 0..2^bits-1) -> int32 words [N, K*bits/32], element r of a word at bits r*bits."""
    offset(bits)
    if codes.ndim != 2 or codes.dtype not in (torch.uint8, torch.int16, torch.int32, torch.int64):
        raise ValueError(f"codes: expected an integer tensor [N, K], received {describe(codes)}")
    per_word = 32 // bits
    n, k = codes.shape
    if k % per_word:
        raise ValueError(f"codes: expected K to be a multiple of {per_word}, received K = {k}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 2 ** bits):
        raise ValueError(f"codes: expected values in 0..{2 ** bits - 1}, received {int(codes.min())}..{int(codes.max())}")
    c = codes.to(torch.int64).view(n, k // per_word, per_word)
    shifts = torch.arange(per_word, dtype=torch.int64) * bits
    words = (c << shifts).sum(-1)                                     # < 2^32, exact in int64
    return (words - (words >= 2 ** 31).to(torch.int64) * 2 ** 32).to(torch.int32)   # same 32 bits as uint32


def unpack_codes(q_weight: Tensor, bits: int) -> Tensor:
    """int32 words [N, W] -> codes [N, W*32/bits] (uint8), the inverse of :func:`pack_codes`."""
    offset(bits)
    if q_weight.ndim != 2 or q_weight.dtype != torch.int32:
        raise ValueError(f"q_weight: expected an int32 tensor [N, K*bits/32], received {describe(q_weight)}")
    per_word = 32 // bits
    shifts = torch.arange(per_word, dtype=torch.int32) * bits
    codes = (q_weight.unsqueeze(-1) >> shifts) & (2 ** bits - 1)      # arithmetic shift, then mask: sign bits gone
    return codes.flatten(-2).to(torch.uint8)


def quantize(w: Tensor, bits: int = 4, group_size: int = 32) -> QuantizedWeight:
    """Eqs. 1-3 on a float weight w [N, K], then packing: q4f16_1 for bits=4."""
    if not isinstance(w, Tensor) or w.ndim != 2 or not w.is_floating_point():
        raise ValueError(f"w: expected a float tensor [N, K], received {describe(w)}")
    _check_layout(bits, group_size, w.shape[1])
    m = offset(bits)
    n, k = w.shape
    w16 = w.detach().to(torch.float16).view(n, k // group_size, group_size)      # the model in fp16 first
    scale = w16.abs().amax(-1) / torch.tensor(m, dtype=torch.float16)            # Eq. 2, an fp16 division
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    x = w16 / safe.unsqueeze(-1) + torch.tensor(m, dtype=torch.float16)           # Eq. 3 in fp16
    q = torch.floor(x.float() + 0.5).clamp(0, 2 * m)                              # round half away (x >= 0)
    q = torch.where((scale == 0).unsqueeze(-1), torch.full_like(q, m), q)
    return QuantizedWeight(pack_codes(q.to(torch.int64).view(n, k), bits), scale, bits, group_size)


def _check_qw(qw: QuantizedWeight) -> None:
    if not isinstance(qw, QuantizedWeight):
        raise ValueError(f"qw: expected a QuantizedWeight, received {type(qw).__name__}")


def dequantize(qw: QuantizedWeight) -> Tensor:
    """Eq. 4: W^ [N, K] in fp32."""
    _check_qw(qw)
    n, k = qw.shape
    q = qw.codes().view(n, k // qw.group_size, qw.group_size).float()
    return ((q - offset(qw.bits)) * qw.q_scale.float().unsqueeze(-1)).view(n, k)


def _check_x(x: Tensor, k: int) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"x: expected a float tensor [..., {k}], received {describe(x)}")


def qlinear_reference(x: Tensor, qw: QuantizedWeight, bias: Tensor | None = None) -> Tensor:
    """The obvious way: dequantize the whole matrix (Eq. 4), then ``F.linear``."""
    _check_qw(qw)
    _check_x(x, qw.shape[1])
    return F.linear(x.float(), dequantize(qw), bias)


def qlinear(x: Tensor, qw: QuantizedWeight, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + bias by Eq. 5, a chunk of groups at a time: codes are widened per chunk, scales applied
    to the per-group partial sums, and no [N, K] matrix (dequantized or widened) is ever built."""
    _check_qw(qw)
    n, k = qw.shape
    _check_x(x, k)
    lead = x.shape[:-1]
    G, m = qw.group_size, offset(qw.bits)
    ng = k // G
    xg = x.reshape(-1, ng, G).float()                                   # [M, ng, G]
    rows = xg.shape[0]
    scale = qw.q_scale.float()                                          # [N, ng]
    y = -m * (xg.sum(-1) @ scale.t())                                   # - m sum_g s_{n,g} sum_{j in g} x_{m,j}
    per_word = 32 // qw.bits
    shifts = torch.arange(per_word, dtype=torch.int32) * qw.bits
    words_per_group = G // per_word
    step = max(1, min(ng, _CHUNK // max(1, n * G), _CHUNK // max(1, rows * n)))
    for g0 in range(0, ng, step):
        g1 = min(ng, g0 + step)
        words = qw.q_weight[:, g0 * words_per_group:g1 * words_per_group]             # [N, gc * G / per_word]
        q = ((words.unsqueeze(-1) >> shifts) & (2 ** qw.bits - 1)).float()             # codes, widened per chunk
        q = q.view(n, g1 - g0, G).permute(1, 2, 0)                                     # [gc, G, N]
        dots = torch.bmm(xg[:, g0:g1].transpose(0, 1), q)                             # sum_j x q   [gc, M, N]
        y += (dots * scale[:, g0:g1].t().unsqueeze(1)).sum(0)                          # * s_{n,g}, sum over g
    if bias is not None:
        y = y + bias
    return y.view(*lead, n)


class _Quantized(nn.Module):
    """A module that holds one matrix in the q4f16_1 layout, as the buffers ``q_weight`` and ``q_scale``."""

    def __init__(self, qw: QuantizedWeight) -> None:
        super().__init__()
        _check_qw(qw)
        self.bits, self.group_size = qw.bits, qw.group_size
        self.register_buffer("q_weight", qw.q_weight)
        self.register_buffer("q_scale", qw.q_scale)

    @property
    def qw(self) -> QuantizedWeight:
        return QuantizedWeight(self.q_weight, self.q_scale, self.bits, self.group_size)


class QLinear(_Quantized):
    """A drop-in for ``nn.Linear`` with its weight in the q4f16_1 layout (bias, if any, kept in fp32)."""

    def __init__(self, qw: QuantizedWeight, bias: Tensor | None = None) -> None:
        super().__init__(qw)
        self.out_features, self.in_features = qw.shape
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 4, group_size: int = 32) -> "QLinear":
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"linear: expected an nn.Linear, received {type(linear).__name__}")
        return cls(quantize(linear.weight, bits, group_size), linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return qlinear(x, self.qw, self.bias)


class QEmbedding(_Quantized):
    """A tied token table in the q4f16_1 layout: ``forward`` dequantizes only the rows looked up, ``logits`` is
    the LM head h E^T by Eq. 5 (the interface of ``kernels.transformer.TiedEmbedding``)."""

    def __init__(self, qw: QuantizedWeight) -> None:
        super().__init__(qw)
        self.num_embeddings, self.embedding_dim = qw.shape

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dtype != torch.int64:
            raise ValueError(f"tokens: expected an int64 tensor, received {describe(tokens)}")
        rows = QuantizedWeight(self.q_weight[tokens.reshape(-1)], self.q_scale[tokens.reshape(-1)], self.bits,
                               self.group_size)
        return dequantize(rows).view(*tokens.shape, self.embedding_dim)   # Eq. 4 on the rows looked up only

    def logits(self, h: Tensor) -> Tensor:
        return qlinear(h, self.qw)


def quantize_model(model: nn.Module, bits: int = 4, group_size: int = 32) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by a :class:`QLinear` and a tied token table
    (a module with ``logits``, e.g. ``TiedEmbedding``) by a :class:`QEmbedding`: q4f16_1 for bits=4, which
    quantizes the embedding and the LM head too. Norm weights and biases stay fp32."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, received {type(model).__name__}")
    offset(bits)
    out = copy.deepcopy(model).eval()
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, QLinear.from_linear(child, bits, group_size))
            elif isinstance(child, nn.Embedding) and hasattr(child, "logits"):
                setattr(parent, name, QEmbedding(quantize(child.weight, bits, group_size)))
    return out


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """What a model stores: quantized parameters and their bytes, and float parameters and their bytes (a tied
    table counted once)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, received {type(model).__name__}")
    out = {"quantized_params": 0, "quantized_bytes": 0, "float_params": 0, "float_bytes": 0}
    for mod in model.modules():
        if isinstance(mod, (QLinear, QEmbedding)):
            n, k = mod.qw.shape
            out["quantized_params"] += n * k
            out["quantized_bytes"] += mod.qw.nbytes()
    for p in {id(p): p for p in model.parameters()}.values():
        out["float_params"] += p.numel()
        out["float_bytes"] += p.numel() * p.element_size()
    return out


# --- peers ----------------------------------------------------------------------------------------------------

def to_matmulnbits(qw: QuantizedWeight) -> dict[str, np.ndarray]:
    """The same weight as onnxruntime's ``MatMulNBits`` inputs: B uint8 [N, K/G, G*b/8] (low nibble first at 4
    bits), scales fp32 [N*K/G], and explicit zero points m (its default for 4 bits is 8, not 7)."""
    _check_qw(qw)
    n, k = qw.shape
    G, b, m = qw.group_size, qw.bits, offset(qw.bits)
    codes = qw.codes().numpy().astype(np.uint8)
    if b == 4:
        B = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8).reshape(n, k // G, G // 2)
        zp = np.full((n, (k // G + 1) // 2), m | (m << 4), np.uint8)
    else:
        B = codes.reshape(n, k // G, G)
        zp = np.full((n, k // G), m, np.uint8)
    return {"B": B, "scales": qw.q_scale.float().numpy().ravel(), "zero_points": zp}


def matmulnbits_session(qw: QuantizedWeight, rows: int, threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A one-node onnxruntime graph y = x W^T with ``com.microsoft::MatMulNBits`` for a fixed number of rows."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    _check_qw(qw)
    check_int("rows", rows, 1)
    n, k = qw.shape
    arrs = to_matmulnbits(qw)
    node = helper.make_node("MatMulNBits", ["A", "B", "S", "Z"], ["Y"], domain="com.microsoft", K=k, N=n,
                            bits=qw.bits, block_size=qw.group_size)
    inits = [helper.make_tensor("B", TensorProto.UINT8, arrs["B"].shape, arrs["B"].tobytes(), raw=True),
             helper.make_tensor("S", TensorProto.FLOAT, arrs["scales"].shape, arrs["scales"].tobytes(), raw=True),
             helper.make_tensor("Z", TensorProto.UINT8, arrs["zero_points"].shape, arrs["zero_points"].tobytes(),
                                raw=True)]
    graph = helper.make_graph([node], "qlinear", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [rows, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [rows, n])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"A": x})[0]


def int4pack_weight(qw: QuantizedWeight) -> tuple[Tensor, Tensor]:
    """A 4-bit weight in the layout of ``torch._weight_int4pack_mm_for_cpu`` (private API): packed codes and
    [K/G, N, 2] (scale, zero) with zero = scale, since that kernel computes (q - 8) * s + z = (q - 7) * s."""
    _check_qw(qw)
    if qw.bits != 4:
        raise ValueError(f"qw: expected a 4-bit weight, received bits = {qw.bits}")
    packed = torch._convert_weight_to_int4pack_for_cpu(qw.codes().to(torch.int32), 1)
    s = qw.q_scale.float().t()
    return packed, torch.stack([s, s], -1).contiguous()


def bench_cases(quick: bool = False, sizes: list[tuple[int, int]] | None = None) -> list:
    """``make bench``: y = x W^T for a q4f16_1 and a q8 weight, M rows of activations: fp32 ``F.linear`` (the
    baseline), dequantize-then-matmul (naive), the grouped Eq. 5 (this module), and the peers: onnxruntime
    ``MatMulNBits`` and (4 bits) PyTorch's private int4 CPU kernel. ``sizes``: (M, K = N) pairs."""
    from kernels.bench import Case

    g = torch.Generator().manual_seed(0)
    cases = []
    if sizes is None:
        sizes = [(1, 256), (16, 256)] if quick else [(m, kn) for kn in (256, 1024, 4096) for m in (1, 16, 128)]
    for bits in BITS:
        for m_rows, kn in sizes:
            w = torch.randn(kn, kn, generator=g) / kn ** 0.5
            x = torch.randn(m_rows, kn, generator=g)
            qw = quantize(w, bits)
            fns = {"fp32 F.linear": lambda x=x, w=w: F.linear(x, w),
                   "dequantize + F.linear": lambda x=x, qw=qw: qlinear_reference(x, qw),
                   "grouped (Eq. 5)": lambda x=x, qw=qw: qlinear(x, qw)}
            ort_mm = matmulnbits_session(qw, m_rows)
            xn = x.numpy()
            fns["onnxruntime MatMulNBits"] = lambda xn=xn, f=ort_mm: f(xn)
            if bits == 4:
                packed, sz = int4pack_weight(qw)
                fns["torch int4pack (private)"] = (lambda x=x, p=packed, sz=sz, G=qw.group_size:
                                                    torch._weight_int4pack_mm_for_cpu(x, p, G, sz))
            weight_bytes_fp32 = kn * kn * 4
            bytes_moved = {name: (weight_bytes_fp32 if name.startswith("fp32") else qw.nbytes()) for name in fns}
            cases.append(Case(f"q{bits} linear M={m_rows} K=N={kn}", fns, flops=2.0 * m_rows * kn * kn,
                              bytes_moved=bytes_moved))
    return cases
