// The book's native kernels: one pass over memory where eager PyTorch needs two or more.
// Built on first use by kernels/native.py with torch.utils.cpp_extension (the system C++ compiler, -march=native
// held to the instruction set the libraries are pinned to: kernels/native.py isa_flags); every function here has
// an eager twin that stays the tests' oracle.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

// Adam++ (Tao et al., arXiv 2412.19444), Eqs. (3)-(6) of kernels/optim.py in the scalar form of torch's fused
// Adam kernel (lr, eps and weight decay already rescaled by the caller, as in AdamPP._fused_update), and in the
// same pass the squared distance of the *new* iterate from x_0, summed in double: the next step's r_{t+1}
// (Eq. 1) without a second read of x and x_0. Streams: read x, g, m, v, x_0; write x, m, v (8, Adam's 7 + x_0).
template <typename scalar_t, bool AMS, bool WD>
double adampp_tensor(scalar_t* __restrict x, const scalar_t* __restrict g, scalar_t* __restrict m,
                     scalar_t* __restrict v, scalar_t* __restrict vmax, const scalar_t* __restrict x0, int64_t n,
                     double lr, double beta1, double beta2, double eps, double weight_decay, double step_size,
                     double bc2_sqrt) {
  const scalar_t one_b1 = 1 - beta1, b2 = beta2, one_b2 = 1 - beta2;
  const scalar_t decay = 1 - lr * weight_decay, ss = step_size, inv_bcs = 1.0 / bc2_sqrt, e = eps;
  constexpr int64_t kChunk = 2048;  // float partial sums over short chunks, added up in double
  std::vector<double> partial(std::max<int64_t>(1, at::get_num_threads()), 0.0);
  at::parallel_for(0, n, 16384, [&](int64_t lo, int64_t hi) {
    double acc = 0.0;
    for (int64_t c = lo; c < hi; c += kChunk) {
      const int64_t end = std::min(hi, c + kChunk);
      scalar_t part = 0;
#pragma omp simd reduction(+ : part)
      for (int64_t j = c; j < end; ++j) {
        scalar_t xj = x[j];
        if constexpr (WD) xj *= decay;
        const scalar_t gj = g[j];
        const scalar_t mj = m[j] + one_b1 * (gj - m[j]);             // lerp, as torch's fused Adam
        const scalar_t vj = b2 * v[j] + one_b2 * gj * gj;
        m[j] = mj;
        v[j] = vj;
        scalar_t vb = vj;
        if constexpr (AMS) {
          vb = vmax[j] > vj ? vmax[j] : vj;
          vmax[j] = vb;
        }
        xj -= ss * mj / (std::sqrt(vb) * inv_bcs + e);
        x[j] = xj;
        const scalar_t d = xj - x0[j];
        part += d * d;
      }
      acc += static_cast<double>(part);
    }
    partial[at::get_thread_num()] += acc;
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

double adampp_step(std::vector<at::Tensor> params, std::vector<at::Tensor> grads, std::vector<at::Tensor> exp_avgs,
                   std::vector<at::Tensor> exp_avg_sqs, std::vector<at::Tensor> max_exp_avg_sqs,
                   std::vector<at::Tensor> x0s, double lr, double beta1, double beta2, double eps,
                   double weight_decay, int64_t step, bool amsgrad) {
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step)));
  const double step_size = lr / bc1;
  double total = 0.0;
  for (size_t i = 0; i < params.size(); ++i) {
    auto& p = params[i];
    TORCH_CHECK(p.is_contiguous() && grads[i].is_contiguous() && exp_avgs[i].is_contiguous() &&
                exp_avg_sqs[i].is_contiguous() && x0s[i].is_contiguous(), "adampp_step: contiguous tensors only");
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "adampp_step", [&] {
      scalar_t* vmax = amsgrad ? max_exp_avg_sqs[i].data_ptr<scalar_t>() : nullptr;
      auto call = [&](auto kernel) {
        total += kernel(p.data_ptr<scalar_t>(), grads[i].data_ptr<scalar_t>(), exp_avgs[i].data_ptr<scalar_t>(),
                        exp_avg_sqs[i].data_ptr<scalar_t>(), vmax, x0s[i].data_ptr<scalar_t>(), p.numel(), lr,
                        beta1, beta2, eps, weight_decay, step_size, bc2_sqrt);
      };
      const bool wd = weight_decay != 0.0;
      if (amsgrad && wd) call(adampp_tensor<scalar_t, true, true>);
      else if (amsgrad) call(adampp_tensor<scalar_t, true, false>);
      else if (wd) call(adampp_tensor<scalar_t, false, true>);
      else call(adampp_tensor<scalar_t, false, false>);
    });
  }
  return total;
}

// Nearest codeword (Streaming VQ, Eq. eq-assign of kernels/vq.py): the index and value of the largest score
// s_k = x.e_k + bias_k of every row (bias = -|e_k|^2 / 2 turns it into the nearest codeword in L2), ties to the
// lowest k as torch.argmax, without writing the [N, K] score matrix. Two paths, both exact running maxima that
// differ only in the order of the float additions that form a score:
//
// * "gemm": per block of B rows, S = E X_b^T [K, B] by one BLAS GEMM through ATen (the tile sized to stay in
//   cache), then the running maximum over k on the tile while it is in cache (argmax_tile);
// * "direct": no GEMM and no tile. R rows at a time, the scores against W registers' worth of codewords are
//   accumulated in registers by broadcast-FMA over the d entries against E^T [d, K] (prepared once per call),
//   the micro-kernel at the heart of a GEMM, and folded into a running maximum in registers at once
//   (direct_rows). It needs 32 vector registers (AVX-512) to hold R W accumulators and R running maxima.
//
// assign_path() picks one from K and d (measured on AVX-512, one thread, against faiss IndexFlat at the shapes of
// kernels/vq.py's bench_cases): direct wherever it is built for 64-byte registers and E^T is not too large or too
// padded, the GEMM otherwise. Tie rule, both paths: a lane (a column of the tile, or one lane of a register in
// direct_rows) replaces its best only on a strict ">" while k increases, so it holds the first maximum of its
// codewords; lanes are then merged by value, ties to the lower k. NaN scores never win (finite inputs are the
// caller's contract: kernels/vq.py validates them).

// Portable SIMD through the compiler's vector extensions (GCC and Clang; no intrinsics): Vec<T> is one register
// of the widest kind the build targets (-march=native), IVec<T> the matching integer lanes for the indices.
#if defined(__GNUC__) && !defined(BOOK_NO_VEC)
#define BOOK_VEC 1
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif
// (explicit specialisations: GCC drops vector_size on a dependent alias template)
template <typename T> struct VecOf;
template <> struct VecOf<float> {
  typedef float V __attribute__((vector_size(kVecBytes)));
  typedef int32_t IV __attribute__((vector_size(kVecBytes)));
  using I = int32_t;
};
template <> struct VecOf<double> {
  typedef double V __attribute__((vector_size(kVecBytes)));
  typedef int64_t IV __attribute__((vector_size(kVecBytes)));
  using I = int64_t;
};
template <typename T> using Vec = typename VecOf<T>::V;
template <typename T> using IVec = typename VecOf<T>::IV;
template <typename T> constexpr int kLanes = kVecBytes / sizeof(T);

template <typename V, typename T>
inline V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline IVec<T> iota_lanes() {
  IVec<T> v;
  for (int l = 0; l < kLanes<T>; ++l) v[l] = l;
  return v;
}
// First maximum over the N lanes of (v, k), ties to the lower k: halve the register (larger value, ties to the lower
// k) down to one lane, log2(N) compare-and-select steps instead of a scalar scan.
template <typename T, int N> struct VecN {
  typedef T V __attribute__((vector_size(N * sizeof(T))));
  typedef typename VecOf<T>::I I;
  typedef I IV __attribute__((vector_size(N * sizeof(T))));
};
template <typename T, int N>
inline void merge_lanes(const typename VecN<T, N>::V& v, const typename VecN<T, N>::IV& k, T* best, int32_t* arg) {
  if constexpr (N == 1) {
    *best = v[0];
    *arg = static_cast<int32_t>(k[0]);
  } else {
    using H = typename VecN<T, N / 2>::V;
    using HI = typename VecN<T, N / 2>::IV;
    H a, b;
    HI ka, kb;
    std::memcpy(&a, &v, sizeof a);
    std::memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof a, sizeof b);
    std::memcpy(&ka, &k, sizeof ka);
    std::memcpy(&kb, reinterpret_cast<const char*>(&k) + sizeof ka, sizeof kb);
    const HI take = (b > a) | ((b == a) & (kb < ka));
    merge_lanes<T, N / 2>(take ? b : a, take ? kb : ka, best, arg);
  }
}
#endif

// Running maximum over the K rows of a codeword-major tile s [K, B] (+ bias[k]) for every column r (a row of x):
// a strict ">" while k increases keeps the first maximum. Columns go in chunks of a few vector registers whose
// best value and k stay in registers while k runs, so the tile is read once and the state written once per chunk.
template <typename scalar_t>
void argmax_tile(const scalar_t* __restrict s, const scalar_t* __restrict bias, int64_t K, int64_t B,
                 scalar_t* __restrict best, int32_t* __restrict arg) {
  int64_t r = 0;
#ifdef BOOK_VEC
  using V = Vec<scalar_t>;
  using IV = IVec<scalar_t>;
  using I = typename VecOf<scalar_t>::I;
  constexpr int L = kLanes<scalar_t>, C = 4;             // C registers of L columns per chunk
  for (; r + C * L <= B; r += C * L) {
    V bv[C];
    IV bk[C];
    for (int c = 0; c < C; ++c) {
      bv[c] = V{} - std::numeric_limits<scalar_t>::infinity();
      bk[c] = IV{};
    }
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* row = s + k * B + r;
      const scalar_t b = bias ? bias[k] : scalar_t(0);
      const IV kk = IV{} + static_cast<I>(k);
      for (int c = 0; c < C; ++c) {
        const V v = vload<V>(row + c * L) + b;
        const IV gt = v > bv[c];
        bv[c] = gt ? v : bv[c];
        bk[c] = gt ? kk : bk[c];
      }
    }
    for (int c = 0; c < C; ++c)
      for (int l = 0; l < L; ++l) {
        best[r + c * L + l] = bv[c][l];
        arg[r + c * L + l] = static_cast<int32_t>(bk[c][l]);
      }
  }
#endif
  for (; r < B; ++r) {                                   // the last columns (all of them without BOOK_VEC)
    scalar_t bv = -std::numeric_limits<scalar_t>::infinity();
    int32_t bk = 0;
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t v = s[k * B + r] + (bias ? bias[k] : scalar_t(0));
      if (v > bv) {
        bv = v;
        bk = static_cast<int32_t>(k);
      }
    }
    best[r] = bv;
    arg[r] = bk;
  }
}

#ifdef BOOK_VEC
// R rows of x [R, d] against all Kp (a multiple of W L) codewords of et = E^T [d, Kp]; bias [Kp] is -inf on the
// padding columns, so that they never win. Per chunk of W L codewords, acc[r][w] (R W registers) accumulate the
// scores over j, one broadcast of x_rj times one load of E^T[j, k0 + w L ...] per FMA (a GEMM micro-kernel), then
// fold into one running (best, k) register pair per row: lane l sees the codewords k = l (mod L) in increasing
// order, so it keeps their first maximum; merge_lanes takes the first maximum over lanes.
template <typename scalar_t, int R, int W>
void direct_rows(const scalar_t* __restrict x, int64_t d, const scalar_t* __restrict et, const scalar_t* __restrict bias,
                 int64_t Kp, scalar_t* __restrict best, int32_t* __restrict arg) {
  using V = Vec<scalar_t>;
  using IV = IVec<scalar_t>;
  using I = typename VecOf<scalar_t>::I;
  constexpr int L = kLanes<scalar_t>;
  V bv[R];
  IV bk[R];
  for (int r = 0; r < R; ++r) {
    bv[r] = V{} - std::numeric_limits<scalar_t>::infinity();
    bk[r] = IV{};
  }
  const IV lanes = iota_lanes<scalar_t>();
  for (int64_t k0 = 0; k0 < Kp; k0 += W * L) {
    V acc[R][W];
    for (int r = 0; r < R; ++r)
      for (int w = 0; w < W; ++w) acc[r][w] = V{};
    const scalar_t* e = et + k0;
    for (int64_t j = 0; j < d; ++j, e += Kp) {
      V ev[W];
      for (int w = 0; w < W; ++w) ev[w] = vload<V>(e + w * L);
      for (int r = 0; r < R; ++r) {
        const V xv = V{} + x[r * d + j];
        for (int w = 0; w < W; ++w) acc[r][w] += xv * ev[w];
      }
    }
    for (int w = 0; w < W; ++w) {
      const V b = vload<V>(bias + k0 + w * L);
      const IV kk = lanes + static_cast<I>(k0 + w * L);
      for (int r = 0; r < R; ++r) {
        const V v = acc[r][w] + b;
        const IV gt = v > bv[r];
        bv[r] = gt ? v : bv[r];
        bk[r] = gt ? kk : bk[r];
      }
    }
  }
  for (int r = 0; r < R; ++r) merge_lanes<scalar_t, L>(bv[r], bk[r], best + r, arg + r);
}

// Register blocking of direct_rows: R rows by W registers of codewords. With 32 registers (AVX-512) 6 x 2 holds
// 12 accumulators, 12 running-maximum registers, 2 codeword loads and a broadcast (6 x 2 and 8 x 2 measured best of
// 3..12 x 1..4); with 16 (AVX2, SSE) 3 x 4 spills least (measured best there, and then no faster than the GEMM).
#ifndef BOOK_DIRECT_R
#define BOOK_DIRECT_R (kVecBytes >= 64 ? 6 : 3)
#endif
#ifndef BOOK_DIRECT_W
#define BOOK_DIRECT_W (kVecBytes >= 64 ? 2 : 4)
#endif
template <typename scalar_t>
void assign_direct(const at::Tensor& x, const at::Tensor& codes, const scalar_t* bias, scalar_t* best, int32_t* ids) {
  constexpr int R = BOOK_DIRECT_R, W = BOOK_DIRECT_W, KC = W * kLanes<scalar_t>;
  const int64_t N = x.size(0), d = x.size(1), K = codes.size(0), Kp = (K + KC - 1) / KC * KC;
  // E^T [d, Kp] and the bias [Kp], padded with zero codewords whose bias is -inf
  at::Tensor et = at::zeros({d, Kp}, codes.options());
  et.narrow(1, 0, K).copy_(codes.t());
  at::Tensor bp = at::full({Kp}, -std::numeric_limits<double>::infinity(), codes.options());
  if (bias) bp.narrow(0, 0, K).copy_(at::from_blob(const_cast<scalar_t*>(bias), {K}, codes.options()));
  else bp.narrow(0, 0, K).zero_();
  const scalar_t* etp = et.data_ptr<scalar_t>();
  const scalar_t* bpp = bp.data_ptr<scalar_t>();
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const int64_t groups = (N + R - 1) / R;
  at::parallel_for(0, groups, 256, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t lo = g * R;
      if (lo + R <= N) {
        direct_rows<scalar_t, R, W>(xp + lo * d, d, etp, bpp, Kp, best + lo, ids + lo);
      } else {                                           // the last N % R rows, zero-padded to R
        std::vector<scalar_t> xr(R * d, scalar_t(0)), bv(R);
        std::vector<int32_t> bk(R);
        std::copy(xp + lo * d, xp + N * d, xr.begin());
        direct_rows<scalar_t, R, W>(xr.data(), d, etp, bpp, Kp, bv.data(), bk.data());
        std::copy(bv.begin(), bv.begin() + (N - lo), best + lo);
        std::copy(bk.begin(), bk.begin() + (N - lo), ids + lo);
      }
    }
  });
}

#endif  // BOOK_VEC

template <typename scalar_t>
void assign_gemm(const at::Tensor& x, const at::Tensor& codes, const scalar_t* bp, int64_t block, scalar_t* best,
                 int32_t* ids) {
  const int64_t N = x.size(0), K = codes.size(0);
  const int64_t nblocks = (N + block - 1) / block;
  at::parallel_for(0, nblocks, 1, [&](int64_t b0, int64_t b1) {
    at::Tensor tile = at::empty({K, block}, x.options());
    for (int64_t ib = b0; ib < b1; ++ib) {
      const int64_t lo = ib * block, hi = std::min(N, lo + block), B = hi - lo;
      at::Tensor S = B == block ? tile : at::empty({K, B}, x.options());
      at::mm_out(S, codes, x.slice(0, lo, hi).t());               // [K, B] = E X_b^T, in cache
      argmax_tile<scalar_t>(S.data_ptr<scalar_t>(), bp, K, B, best + lo, ids + lo);
    }
  });
}

// The path assign() takes by default. Direct only where built for 64-byte registers (with 16 registers it spills
// and is no faster than the GEMM), while E^T stays in L2 (at most 256 KiB; at 2 MiB BLAS's packing won by 10 %), and
// while padding K up to whole registers wastes at most a quarter of the work (K = 4, 16 went faster by the GEMM).
std::string assign_path(int64_t K, int64_t d, int64_t itemsize) {
#ifdef BOOK_VEC
  if (kVecBytes >= 64 && (itemsize == 4 || itemsize == 8)) {
    const int64_t kc = BOOK_DIRECT_W * kVecBytes / itemsize, Kp = (K + kc - 1) / kc * kc;
    if (K * d * itemsize <= (int64_t(256) << 10) && 4 * (Kp - K) <= Kp) return "direct";
  }
#endif
  return "gemm";
}

std::tuple<at::Tensor, at::Tensor> assign(at::Tensor x, at::Tensor codes, c10::optional<at::Tensor> bias,
                                          int64_t block, std::string path) {
  TORCH_CHECK(x.dim() == 2 && codes.dim() == 2 && x.size(1) == codes.size(1), "assign: x [N, d], codes [K, d]");
  TORCH_CHECK(x.scalar_type() == codes.scalar_type() && x.is_contiguous() && codes.is_contiguous(),
              "assign: contiguous x and codes of one dtype");
  TORCH_CHECK(x.device().is_cpu() && codes.device().is_cpu(), "assign: CPU tensors");
  TORCH_CHECK(block > 0, "assign: block > 0");
  const int64_t N = x.size(0), K = codes.size(0);
  TORCH_CHECK(K >= 1, "assign: at least one codeword");
  TORCH_CHECK(K < std::numeric_limits<int32_t>::max(), "assign: K too large");
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    b = bias->contiguous();
    TORCH_CHECK(b.numel() == K && b.scalar_type() == x.scalar_type(), "assign: bias [K] of x's dtype");
  }
  if (path == "auto") path = assign_path(K, x.size(1), x.element_size());
  TORCH_CHECK(path == "direct" || path == "gemm", "assign: path is \"auto\", \"direct\" or \"gemm\", got ", path);
  auto ids = at::empty({N}, x.options().dtype(at::kInt));
  auto best = at::empty({N}, x.options());
  if (N == 0) return {ids.to(at::kLong), best};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "assign", [&] {
    const scalar_t* bp = b.defined() ? b.data_ptr<scalar_t>() : nullptr;
#ifdef BOOK_VEC
    if (path == "direct") {
      assign_direct<scalar_t>(x, codes, bp, best.data_ptr<scalar_t>(), ids.data_ptr<int32_t>());
      return;
    }
#else
    TORCH_CHECK(path == "gemm", "assign: the direct path needs a GCC or Clang build");
#endif
    assign_gemm<scalar_t>(x, codes, bp, block, best.data_ptr<scalar_t>(), ids.data_ptr<int32_t>());
  });
  return {ids.to(at::kLong), best};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("adampp_step", &adampp_step, "Adam++ update and the next distance from x_0 in one pass");
  m.def("assign", &assign, "nearest codeword by largest score, the argmax taken in registers (path \"direct\") or "
        "on each GEMM tile in cache (\"gemm\"); \"auto\": assign_path(K, d, itemsize)",
        py::arg("x"), py::arg("codes"), py::arg("bias") = py::none(), py::arg("block") = 512,
        py::arg("path") = "auto");
  m.def("assign_path", &assign_path, "the path assign() takes by default for K codewords of d entries",
        py::arg("K"), py::arg("d"), py::arg("itemsize"));
}
