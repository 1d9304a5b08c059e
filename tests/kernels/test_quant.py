"""kernels.quant: the q4f16_1 layout (codes, packing, fp16 scales, rounding), exact bytes per parameter, the
grouped quantized linear against dequantize-then-matmul and against onnxruntime's MatMulNBits and PyTorch's
int4 CPU kernel, quantized models, bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kernels import quant
from kernels.quant import (QEmbedding, QLinear, QuantizedWeight, bench_cases, dequantize, int4pack_weight,
                           matmulnbits_session, offset, pack_codes, qlinear, qlinear_reference, quantize,
                           quantize_model, unpack_codes, weight_bytes)
from kernels.transformer import TinyLlama


def slow_quantize(w: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Eqs. 1-3 element by element with NumPy's IEEE float16 scalars, as MLC-LLM's converter computes them."""
    m = np.float16(2 ** (bits - 1) - 1)
    n, k = w.shape
    w16 = w.astype(np.float16)
    codes = np.zeros((n, k), np.int64)
    scales = np.zeros((n, k // group), np.float16)
    for r in range(n):
        for g in range(k // group):
            block = w16[r, g * group:(g + 1) * group]
            s = np.float16(max(abs(v) for v in block) / m)
            scales[r, g] = s
            for j, v in enumerate(block):
                if s == 0:
                    codes[r, g * group + j] = int(m)
                    continue
                x = np.float16(np.float16(v / s) + m)
                codes[r, g * group + j] = min(max(int(np.floor(np.float64(x) + 0.5)), 0), 2 * int(m))
    return codes, scales


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantize_equals_the_elementwise_fp16_recipe(bits, seed):
    g = torch.Generator().manual_seed(seed)
    n, k = int(torch.randint(1, 6, (), generator=g)), 32 * int(torch.randint(1, 4, (), generator=g))
    w = torch.randn(n, k, generator=g) * 0.1
    w[0, :32] = 0.0                                            # a group of zeros: scale 0, code m
    qw = quantize(w, bits)
    codes, scales = slow_quantize(w.numpy(), bits, 32)
    np.testing.assert_array_equal(qw.codes().numpy(), codes)
    np.testing.assert_array_equal(qw.q_scale.numpy(), scales)
    assert qw.q_scale.dtype == torch.float16 and qw.q_weight.dtype == torch.int32
    assert float(qw.q_scale[0, 0]) == 0 and (qw.codes()[0, :32] == offset(bits)).all()


def test_rounding_is_half_away_from_zero_as_in_mlc_llm():
    """x = w/s + 7 exactly at .5: llvm.round (TVM's tir.round) goes away from zero, torch.round to even."""
    w = torch.zeros(1, 32)
    w[0, 0], w[0, 1], w[0, 2] = 7.0, 1.5, -2.5                # s = 1: 8.5 -> 9 (not 8), 4.5 -> 5 (not 4)
    codes = quantize(w, 4).codes()[0]
    assert codes[:3].tolist() == [14, 9, 5]


@pytest.mark.parametrize("bits", [4, 8])
def test_codes_use_0_to_2m_and_pack_lowest_bits_first(bits):
    m = offset(bits)
    w = torch.linspace(-1, 1, 64).view(1, 64)
    codes = quantize(w, bits).codes()
    assert int(codes.min()) == 0 and int(codes.max()) == 2 * m   # code 15 (4 bits) / 255 (8 bits) unused
    c = torch.arange(32 // bits, dtype=torch.int64).view(1, -1) % (2 ** bits)
    word = int(pack_codes(c, bits)[0, 0]) & 0xFFFFFFFF
    assert word == sum(int(v) << (bits * r) for r, v in enumerate(c[0]))


@pytest.mark.parametrize("bits", [4, 8])
def test_pack_unpack_round_trip_on_random_shapes(bits):
    g = torch.Generator().manual_seed(bits)
    for _ in range(5):
        n, k = int(torch.randint(1, 9, (), generator=g)), (32 // bits) * int(torch.randint(1, 20, (), generator=g))
        c = torch.randint(0, 2 ** bits, (n, k), generator=g)
        packed = pack_codes(c, bits)
        assert packed.shape == (n, k * bits // 32)
        torch.testing.assert_close(unpack_codes(packed, bits).long(), c)


@pytest.mark.parametrize("bits, expected", [(4, 0.5625), (8, 1.0625)])
def test_bytes_per_parameter_are_exact(bits, expected):
    qw = quantize(torch.randn(96, 320), bits)
    assert qw.nbytes() == 96 * 320 * bits // 8 + 96 * 10 * 2
    assert qw.bytes_per_param() == expected
    assert quantize(torch.randn(8, 128), bits, group_size=64).bytes_per_param() == bits / 8 + 2 / 64


# Half a step from rounding, plus the two fp16 roundings of Eq. 3, each at most half of fp16's spacing there:
# w/s in [-m, m] (spacing 2^-8 below 8, 2^-4 below 128), then + m in [0, 2m] (2^-7 below 16, 2^-3 below 256).
FP16_BOUND = {4: 0.5 + 2**-9 + 2**-8, 8: 0.5 + 2**-5 + 2**-4}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("bits", [4, 8])
def test_dequantization_error_is_about_half_a_step(bits, seed):
    """Half a step from rounding, plus the fp16 arithmetic of Eq. 3 (FP16_BOUND)."""
    bound = FP16_BOUND[bits]
    w = torch.randn(16, 256, generator=torch.Generator().manual_seed(seed))
    qw = quantize(w, bits)
    step = qw.q_scale.float().repeat_interleave(32, 1)
    w16 = w.half().float()                                     # the conversion starts from the fp16 model
    err = (dequantize(qw) - w16).abs() / step
    assert float(err.max()) <= bound and float(err.max()) >= 0.45


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("seed", range(4))
def test_grouped_linear_equals_dequantize_then_matmul(bits, seed):
    g = torch.Generator().manual_seed(seed)
    n, k = int(torch.randint(1, 70, (), generator=g)), 32 * int(torch.randint(1, 9, (), generator=g))
    lead = [int(torch.randint(1, 4, (), generator=g)) for _ in range(int(torch.randint(1, 3, (), generator=g)))]
    w, x, b = torch.randn(n, k, generator=g), torch.randn(*lead, k, generator=g), torch.randn(n, generator=g)
    qw = quantize(w, bits)
    ref = qlinear_reference(x, qw, b)
    got = qlinear(x, qw, b)
    assert got.shape == (*lead, n)
    assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-4


def test_grouped_linear_works_a_few_groups_at_a_time(monkeypatch):
    """With a small chunk the loop over groups runs many times; the result is the same."""
    w, x = torch.randn(40, 256), torch.randn(5, 256)
    qw = quantize(w, 4)
    whole = qlinear(x, qw)
    monkeypatch.setattr(quant, "_CHUNK", 40 * 32)            # one group per chunk
    torch.testing.assert_close(qlinear(x, qw), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [1, 7])
def test_matches_onnxruntime_matmulnbits_with_explicit_zero_point(bits, rows):
    w, x = torch.randn(48, 160), torch.randn(rows, 160)
    qw = quantize(w, bits)
    ref = qlinear_reference(x, qw).numpy()
    got = matmulnbits_session(qw, rows)(x.numpy())
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) <= 1e-4


def test_matches_torch_int4pack_kernel():
    w, x = torch.randn(64, 256), torch.randn(3, 256)
    qw = quantize(w, 4)
    packed, sz = int4pack_weight(qw)
    got = torch._weight_int4pack_mm_for_cpu(x, packed, 32, sz)
    ref = qlinear_reference(x, qw)
    assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-4


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_model_equals_the_model_with_dequantized_weights(bits):
    torch.manual_seed(bits)
    model = TinyLlama(40, 64, 2, 4, hidden=96).eval()
    qmodel = quantize_model(model, bits)
    assert not any(isinstance(mod, torch.nn.Linear) for mod in qmodel.modules())
    assert isinstance(qmodel.embed, QEmbedding)
    twin = TinyLlama(40, 64, 2, 4, hidden=96).eval()       # the reference: weights replaced by Eq. 4's values
    twin.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, mod in twin.named_modules():
            if isinstance(mod, torch.nn.Linear) or name == "embed":
                mod.weight.copy_(dequantize(quantize(mod.weight, bits)))
    tokens = torch.randint(0, 40, (2, 11))
    torch.testing.assert_close(qmodel(tokens), twin(tokens), rtol=1e-4, atol=1e-4)
    assert model(tokens).shape == qmodel(tokens).shape       # the original is untouched
    sizes = weight_bytes(qmodel)
    n_q = 40 * 64 + 2 * (64 * 192 + 64 * 64 + 3 * 64 * 96)
    assert sizes["quantized_params"] == n_q
    assert sizes["quantized_bytes"] == n_q * (bits / 8 + 2 / 32)
    assert sizes["float_params"] == 2 * 2 * 64 + 64        # the RMSNorm weights stay fp32


def test_qembedding_rows_and_head_read_one_table():
    w = torch.randn(30, 64)
    emb = QEmbedding(quantize(w, 4))
    tokens = torch.tensor([[3, 0, 29], [5, 5, 1]])
    torch.testing.assert_close(emb(tokens), dequantize(emb.qw)[tokens])
    h = torch.randn(2, 64)
    torch.testing.assert_close(emb.logits(h), h @ dequantize(emb.qw).t(), rtol=1e-5, atol=1e-5)


def test_qlinear_module_keeps_the_bias():
    lin = torch.nn.Linear(64, 10)
    q = QLinear.from_linear(lin, 8)
    x = torch.randn(4, 64)
    torch.testing.assert_close(q(x), F.linear(x, dequantize(q.qw), lin.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call, match", [
    (lambda: quantize(torch.randn(4, 64), bits=3), "bits"),
    (lambda: quantize(torch.randn(4, 48)), "multiple of group_size"),
    (lambda: quantize(torch.randn(4, 64), group_size=4), "group_size"),
    (lambda: quantize(torch.arange(64).view(1, 64)), "w"),
    (lambda: quantize(torch.randn(64)), "w"),
    (lambda: qlinear(torch.randn(2, 32), quantize(torch.randn(4, 64))), "x"),
    (lambda: qlinear(torch.randn(2, 64), "weight"), "qw"),
    (lambda: pack_codes(torch.full((1, 8), 16), 4), "codes"),
    (lambda: pack_codes(torch.zeros(1, 6, dtype=torch.int64), 4), "codes"),
    (lambda: unpack_codes(torch.zeros(1, 2, dtype=torch.int64), 4), "q_weight"),
    (lambda: int4pack_weight(quantize(torch.randn(4, 64), 8)), "4-bit"),
    (lambda: QEmbedding(quantize(torch.randn(4, 64)))(torch.zeros(2, dtype=torch.int32)), "tokens"),
    (lambda: quantize_model("model"), "model"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bench_cases_run_quickly():
    cases = bench_cases(quick=True)
    assert cases and all(len(c.fns) >= 4 for c in cases)
    for case in cases:
        outs = {name: fn() for name, fn in case.fns.items()}
        ref = outs["dequantize + F.linear"]
        for name, out in outs.items():
            if name != "fp32 F.linear":
                out = torch.as_tensor(np.asarray(out))
                assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-4, name
