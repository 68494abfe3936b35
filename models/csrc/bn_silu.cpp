// BatchNorm2d (training statistics) followed by SiLU, forward and backward, in one pass each over channels_last rows.
//
// Why: in a YOLOv5 training step on a CPU, BatchNorm and SiLU are separate PyTorch kernels, each a pass over every
// activation (statistics, normalise, SiLU, SiLU backward, two BatchNorm backward passes), and the SiLU keeps its own
// input for the backward. Here the forward reads the input twice and writes the output once; the backward reads the
// gradient and the input once to form the SiLU gradient dz and its sums, keeping dz in the input gradient's buffer,
// then turns dz into the input gradient in place. Only the input is kept for the backward: the normalised value and
// the sigmoid are recomputed from it.
//
// Layout: x, out, grad are [rows][channels] (a channels_last N x C x H x W tensor has rows = N*H*W), channels
// contiguous, so the inner loops run over channels and vectorise. Element type float or bfloat16; arithmetic and
// statistics in float, per-thread sums carried in double across blocks of rows. No PyTorch headers: this file
// compiles in under a second with the system compiler (utils/native.py), and OpenMP is the process's own libgomp,
// the runtime PyTorch's CPU kernels already run on.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kBlockRows = 128;  // rows summed in float before the sums move to double

struct BF16 {
  uint16_t bits;
};

inline float load(float v) { return v; }
inline float load(BF16 v) {
  uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline void store(float* p, float v) { *p = v; }
inline void store(BF16* p, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;  // round to nearest, ties to even
  p->bits = static_cast<uint16_t>(nan ? 0x7fc0u : rounded);
}

// exp(v) to about 2 ulp: v = n ln2 + r with |r| <= ln2/2, a degree-6 Taylor polynomial for e^r, and 2^n put
// straight into the exponent bits. Written out so that the compiler vectorises it (libm's expf does not inline).
inline float exp_approx(float v) {
  v = v < -87.0f ? -87.0f : (v > 87.0f ? 87.0f : v);
  const float n = std::floor(v * 1.44269504088896341f + 0.5f);
  float r = v - n * 0.693359375f;  // ln2 split in two so that n * ln2 is exact enough
  r = r + n * 2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

inline float sigmoid(float z) { return 1.0f / (1.0f + exp_approx(-z)); }

// Two per-channel sums over all rows. Each thread adds its rows into float accumulators, moves them into its double
// sums every kBlockRows rows, and the threads' double sums are added at the end.
class ChannelSums {
 public:
  ChannelSums(int threads, int64_t channels)
      : threads_(threads), channels_(channels), per_thread_(static_cast<size_t>(threads) * 2 * channels, 0.0) {}

  // Runs row_body(row, acc_a, acc_b) for each row of [lo, hi) in thread t; the body adds that row into acc_a, acc_b.
  template <typename RowBody>
  void accumulate(int t, int64_t lo, int64_t hi, RowBody row_body) {
    const int64_t c = channels_;
    double* mine = per_thread_.data() + static_cast<size_t>(t) * 2 * c;
    std::vector<float> acc_a(c), acc_b(c);
    for (int64_t block = lo; block < hi; block += kBlockRows) {
      const int64_t end = std::min(block + kBlockRows, hi);
      std::fill(acc_a.begin(), acc_a.end(), 0.0f);
      std::fill(acc_b.begin(), acc_b.end(), 0.0f);
      for (int64_t row = block; row < end; ++row) row_body(row, acc_a.data(), acc_b.data());
      for (int64_t k = 0; k < c; ++k) {
        mine[k] += acc_a[k];
        mine[c + k] += acc_b[k];
      }
    }
  }

  void totals(double* a, double* b) const {
    const int64_t c = channels_;
    for (int64_t k = 0; k < c; ++k) {
      a[k] = b[k] = 0.0;
      for (int t = 0; t < threads_; ++t) {
        a[k] += per_thread_[static_cast<size_t>(t) * 2 * c + k];
        b[k] += per_thread_[static_cast<size_t>(t) * 2 * c + c + k];
      }
    }
  }

 private:
  int threads_;
  int64_t channels_;
  std::vector<double> per_thread_;  // [threads][2][channels]
};

inline void thread_rows(int64_t rows, int thread, int threads, int64_t* lo, int64_t* hi) {
  *lo = rows * thread / threads;
  *hi = rows * (thread + 1) / threads;
}

template <typename T>
void forward(const T* x, int64_t rows, int64_t channels, const float* weight, const float* bias, float eps,
             float momentum, float* running_mean, float* running_var, int threads, T* out, float* mean,
             float* invstd) {
  ChannelSums sums(threads, channels);
  std::vector<double> sum(channels), sum_sq(channels);
  std::vector<float> scale(channels), shift(channels);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    int64_t lo, hi;
    thread_rows(rows, t, threads, &lo, &hi);
    sums.accumulate(t, lo, hi, [&](int64_t m, float* acc_sum, float* acc_sq) {
      const T* row = x + m * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        const float v = load(row[c]);
        acc_sum[c] += v;
        acc_sq[c] += v * v;
      }
    });
#pragma omp barrier
#pragma omp single
    {
      sums.totals(sum.data(), sum_sq.data());
      for (int64_t c = 0; c < channels; ++c) {
        const double mu = sum[c] / rows;
        double var = sum_sq[c] / rows - mu * mu;
        var = var < 0 ? 0 : var;
        mean[c] = static_cast<float>(mu);
        invstd[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
        scale[c] = invstd[c] * weight[c];
        shift[c] = bias[c] - mean[c] * scale[c];
        if (running_mean) {  // nn.BatchNorm2d's update: the running variance is the unbiased one
          running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * mu);
          running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * var * rows / (rows - 1));
        }
      }
    }  // implicit barrier: every thread sees scale and shift
    const float* sc = scale.data();
    const float* sh = shift.data();
    for (int64_t m = lo; m < hi; ++m) {
      const T* row = x + m * channels;
      T* o = out + m * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        const float z = load(row[c]) * sc[c] + sh[c];
        store(o + c, z * sigmoid(z));
      }
    }
  }
}

// d silu(z) / dz = s (1 + z (1 - s)), s = sigmoid(z); z = xhat * weight + bias, xhat = (x - mean) * invstd.
// BatchNorm's input gradient: weight * invstd * (dz - mean(dz) - xhat * mean(dz * xhat)).
template <typename T>
void backward(const T* grad, const T* x, int64_t rows, int64_t channels, const float* mean, const float* invstd,
              const float* weight, const float* bias, int threads, T* grad_x, float* grad_weight, float* grad_bias) {
  ChannelSums sums(threads, channels);
  std::vector<double> sum_dz(channels), sum_dz_xc(channels);
  std::vector<float> scale(channels), shift(channels), k0(channels), k1(channels), k2(channels);
  for (int64_t c = 0; c < channels; ++c) {
    scale[c] = invstd[c] * weight[c];
    shift[c] = bias[c] - mean[c] * scale[c];
  }
  const float* sc = scale.data();
  const float* sh = shift.data();
  const float* mu = mean;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    int64_t lo, hi;
    thread_rows(rows, t, threads, &lo, &hi);
    sums.accumulate(t, lo, hi, [&](int64_t m, float* acc_dz, float* acc_dz_xc) {
      const T* row = x + m * channels;
      const T* g = grad + m * channels;
      T* dz_out = grad_x + m * channels;  // dz waits in grad_x for the second pass
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        const float v = load(row[c]);
        const float z = v * sc[c] + sh[c];
        const float sg = sigmoid(z);
        const float dz = load(g[c]) * sg * (1.0f + z * (1.0f - sg));
        store(dz_out + c, dz);
        acc_dz[c] += dz;
        acc_dz_xc[c] += dz * (v - mu[c]);
      }
    });
#pragma omp barrier
#pragma omp single
    {
      sums.totals(sum_dz.data(), sum_dz_xc.data());
      for (int64_t c = 0; c < channels; ++c) {
        const double is = invstd[c];
        grad_bias[c] = static_cast<float>(sum_dz[c]);
        grad_weight[c] = static_cast<float>(sum_dz_xc[c] * is);
        k0[c] = weight[c] * invstd[c];
        k1[c] = static_cast<float>(sum_dz[c] / rows);
        k2[c] = static_cast<float>(sum_dz_xc[c] * is * is / rows);
      }
    }
    const float* a0 = k0.data();
    const float* a1 = k1.data();
    const float* a2 = k2.data();
    for (int64_t m = lo; m < hi; ++m) {
      const T* row = x + m * channels;
      T* o = grad_x + m * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        store(o + c, a0[c] * (load(o[c]) - a1[c] - (load(row[c]) - mu[c]) * a2[c]));
      }
    }
  }
}

}  // namespace

extern "C" {

// running_mean and running_var may be null (a BatchNorm that keeps no running statistics).
void bn_silu_forward_f32(const float* x, int64_t rows, int64_t channels, const float* weight, const float* bias,
                         float eps, float momentum, float* running_mean, float* running_var, int threads, float* out,
                         float* mean, float* invstd) {
  forward(x, rows, channels, weight, bias, eps, momentum, running_mean, running_var, threads, out, mean, invstd);
}

void bn_silu_forward_bf16(const uint16_t* x, int64_t rows, int64_t channels, const float* weight, const float* bias,
                          float eps, float momentum, float* running_mean, float* running_var, int threads,
                          uint16_t* out, float* mean, float* invstd) {
  forward(reinterpret_cast<const BF16*>(x), rows, channels, weight, bias, eps, momentum, running_mean, running_var,
          threads, reinterpret_cast<BF16*>(out), mean, invstd);
}

void bn_silu_backward_f32(const float* grad, const float* x, int64_t rows, int64_t channels, const float* mean,
                          const float* invstd, const float* weight, const float* bias, int threads, float* grad_x,
                          float* grad_weight, float* grad_bias) {
  backward(grad, x, rows, channels, mean, invstd, weight, bias, threads, grad_x, grad_weight, grad_bias);
}

void bn_silu_backward_bf16(const uint16_t* grad, const uint16_t* x, int64_t rows, int64_t channels,
                           const float* mean, const float* invstd, const float* weight, const float* bias,
                           int threads, uint16_t* grad_x, float* grad_weight, float* grad_bias) {
  backward(reinterpret_cast<const BF16*>(grad), reinterpret_cast<const BF16*>(x), rows, channels, mean, invstd,
           weight, bias, threads, reinterpret_cast<BF16*>(grad_x), grad_weight, grad_bias);
}

}  // extern "C"
