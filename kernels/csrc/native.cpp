// The book's native kernels: one pass over memory where eager PyTorch needs two or more.
// Built on first use by kernels/native.py with torch.utils.cpp_extension (the system C++ compiler); every
// function here has an eager twin that stays the tests' oracle.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
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

// Nearest codeword (Streaming VQ, Eq. eq-assign of kernels/vq.py): the score of every codeword against a block of
// rows, S = E X_b^T + bias [K, B] (one BLAS GEMM through ATen, the block sized to stay in cache), and the running
// maximum over k taken while the tile is in cache. Laid out codeword-major, the maximum is a compare-and-select
// over B contiguous rows per codeword, which vectorises; the strict ">" with k increasing keeps the first
// maximum, as torch.argmax does. Eager PyTorch writes the whole [N, K] score matrix and reads it again.
template <typename scalar_t>
void argmax_tile(const scalar_t* __restrict s, const scalar_t* __restrict bias, int64_t K, int64_t B,
                 scalar_t* __restrict best, int32_t* __restrict arg) {
  for (int64_t r = 0; r < B; ++r) {
    best[r] = -std::numeric_limits<scalar_t>::infinity();
    arg[r] = 0;
  }
  for (int64_t k = 0; k < K; ++k) {
    const scalar_t* __restrict row = s + k * B;
    const scalar_t bk = bias ? bias[k] : scalar_t(0);
    const int32_t kk = static_cast<int32_t>(k);
#pragma omp simd
    for (int64_t r = 0; r < B; ++r) {
      const scalar_t v = row[r] + bk;
      const bool gt = v > best[r];
      best[r] = gt ? v : best[r];
      arg[r] = gt ? kk : arg[r];
    }
  }
}

std::tuple<at::Tensor, at::Tensor> assign(at::Tensor x, at::Tensor codes, c10::optional<at::Tensor> bias,
                                          int64_t block) {
  TORCH_CHECK(x.dim() == 2 && codes.dim() == 2 && x.size(1) == codes.size(1), "assign: x [N, d], codes [K, d]");
  TORCH_CHECK(x.scalar_type() == codes.scalar_type() && x.is_contiguous() && codes.is_contiguous(),
              "assign: contiguous x and codes of one dtype");
  TORCH_CHECK(block > 0, "assign: block > 0");
  const int64_t N = x.size(0), K = codes.size(0);
  TORCH_CHECK(K < std::numeric_limits<int32_t>::max(), "assign: K too large");
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    b = bias->contiguous();
    TORCH_CHECK(b.numel() == K && b.scalar_type() == x.scalar_type(), "assign: bias [K] of x's dtype");
  }
  auto ids = at::empty({N}, x.options().dtype(at::kInt));
  auto best = at::empty({N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "assign", [&] {
    const scalar_t* bp = b.defined() ? b.data_ptr<scalar_t>() : nullptr;
    const int64_t nblocks = (N + block - 1) / block;
    at::parallel_for(0, nblocks, 1, [&](int64_t b0, int64_t b1) {
      at::Tensor tile = at::empty({K, block}, x.options());
      for (int64_t ib = b0; ib < b1; ++ib) {
        const int64_t lo = ib * block, hi = std::min(N, lo + block), B = hi - lo;
        at::Tensor S = B == block ? tile : at::empty({K, B}, x.options());
        at::mm_out(S, codes, x.slice(0, lo, hi).t());               // [K, B] = E X_b^T, in cache
        argmax_tile<scalar_t>(S.data_ptr<scalar_t>(), bp, K, B, best.data_ptr<scalar_t>() + lo,
                              ids.data_ptr<int32_t>() + lo);
      }
    });
  });
  return {ids.to(at::kLong), best};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("adampp_step", &adampp_step, "Adam++ update and the next distance from x_0 in one pass");
  m.def("assign", &assign, "codeword scores tile by tile with the running argmax taken while each tile is in cache",
        py::arg("x"), py::arg("codes"), py::arg("bias") = py::none(), py::arg("block") = 512);
}
