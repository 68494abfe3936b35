// BatchNorm2d (training statistics) followed by SiLU, forward and backward, in one pass each over channels_last rows.
//
// Why: in a YOLOv5 training step on a CPU, BatchNorm and SiLU are separate PyTorch kernels, each a pass over every
// activation (statistics, normalise, SiLU, SiLU backward, two BatchNorm backward passes), and the SiLU keeps its own
// input for the backward. Here the forward reads the input twice and writes the output once; the backward reads the
// gradient and the input once to form the SiLU gradient dz and its sums, keeping dz in the input gradient's buffer,
// then turns dz into the input gradient in place. Only the input is kept for the backward: the normalised value and
// the sigmoid are recomputed from it.
//
// Layouts: channels_last, where x, out and grad are [rows][channels] (rows = N*H*W) with channels contiguous, so the
// inner loops run over channels and vectorise; and contiguous (NCHW), where they are [N][channels][plane] (plane =
// H*W), each plane one channel's, so the inner loops run along a plane with the channel's constants in registers.
// Which layout wins depends on the CPU's convolutions (channels_last was 1.9x on an AVX-512 Xeon and 0.91x on an AVX2
// EPYC), so the kernel serves both. Element type float or bfloat16; arithmetic and statistics in float, sums carried
// in double across blocks. No PyTorch headers: this file compiles in about a second with the system compiler
// (utils/native.py), and OpenMP is the process's own libgomp, the runtime PyTorch's CPU kernels already run on.

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
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

// The per-channel constants of the forward from the batch sums over `count` values per channel: the statistics for
// the backward, the scale and shift of the normalisation, and nn.BatchNorm2d's running-statistics update.
struct ForwardConstants {
  std::vector<float> scale, shift;

  ForwardConstants(const double* sum, const double* sum_sq, int64_t count, int64_t channels, const float* weight,
                   const float* bias, float eps, float momentum, float* running_mean, float* running_var,
                   float* mean, float* invstd)
      : scale(channels), shift(channels) {
    for (int64_t c = 0; c < channels; ++c) {
      const double mu = sum[c] / count;
      double var = sum_sq[c] / count - mu * mu;
      var = var < 0 ? 0 : var;
      mean[c] = static_cast<float>(mu);
      invstd[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
      scale[c] = invstd[c] * weight[c];
      shift[c] = bias[c] - mean[c] * scale[c];
      if (running_mean) {  // the running variance is the unbiased one
        running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * mu);
        running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * var * count / (count - 1));
      }
    }
  }
};

// d silu(z) / dz = s (1 + z (1 - s)), s = sigmoid(z); z = xhat * weight + bias, xhat = (x - mean) * invstd.
// BatchNorm's input gradient: weight * invstd * (dz - mean(dz) - xhat * mean(dz * xhat))
// = k0 (dz - k1 - (x - mean) k2), from the sums of dz and dz (x - mean) over `count` values per channel; these also give the parameters' gradients.
struct BackwardConstants {
  std::vector<float> k0, k1, k2;

  BackwardConstants(const double* sum_dz, const double* sum_dz_xc, int64_t count, int64_t channels,
                    const float* weight, const float* invstd, float* grad_weight, float* grad_bias)
      : k0(channels), k1(channels), k2(channels) {
    for (int64_t c = 0; c < channels; ++c) {
      const double is = invstd[c];
      grad_bias[c] = static_cast<float>(sum_dz[c]);
      grad_weight[c] = static_cast<float>(sum_dz_xc[c] * is);
      k0[c] = weight[c] * invstd[c];
      k1[c] = static_cast<float>(sum_dz[c] / count);
      k2[c] = static_cast<float>(sum_dz_xc[c] * is * is / count);
    }
  }
};

// The gradient at z of silu, given the gradient g at its output.
inline float silu_grad(float g, float z) {
  const float sg = sigmoid(z);
  return g * sg * (1.0f + z * (1.0f - sg));
}

// The BatchNorm's parameters, running statistics and batch statistics, as they came across the C ABI.
struct Statistics {
  const float* weight;
  const float* bias;
  float eps, momentum;
  float* running_mean;  // null: a BatchNorm that keeps no running statistics
  float* running_var;
  float* mean;  // written by the forward, read by the backward
  float* invstd;
};

template <typename T>
void forward_rows(const T* x, int64_t rows, int64_t channels, const Statistics& st, int threads, T* out) {
  ChannelSums sums(threads, channels);
  std::vector<double> sum(channels), sum_sq(channels);
  std::optional<ForwardConstants> constants;  // made by one thread, read by all
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
      constants.emplace(sum.data(), sum_sq.data(), rows, channels, st.weight, st.bias, st.eps,
                        st.momentum, st.running_mean, st.running_var, st.mean, st.invstd);
    }  // implicit barrier: every thread sees the constants
    const float* sc = constants->scale.data();
    const float* sh = constants->shift.data();
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

template <typename T>
void backward_rows(const T* grad, const T* x, int64_t rows, int64_t channels, const Statistics& st, int threads,
                   T* grad_x, float* grad_weight, float* grad_bias) {
  ChannelSums sums(threads, channels);
  std::vector<double> sum_dz(channels), sum_dz_xc(channels);
  std::vector<float> scale(channels), shift(channels);
  for (int64_t c = 0; c < channels; ++c) {
    scale[c] = st.invstd[c] * st.weight[c];
    shift[c] = st.bias[c] - st.mean[c] * scale[c];
  }
  const float* sc = scale.data();
  const float* sh = shift.data();
  const float* mu = st.mean;
  std::optional<BackwardConstants> constants;  // made by one thread, read by all
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
        const float dz = silu_grad(load(g[c]), v * sc[c] + sh[c]);
        store(dz_out + c, dz);
        acc_dz[c] += dz;
        acc_dz_xc[c] += dz * (v - mu[c]);
      }
    });
#pragma omp barrier
#pragma omp single
    {
      sums.totals(sum_dz.data(), sum_dz_xc.data());
      constants.emplace(sum_dz.data(), sum_dz_xc.data(), rows, channels, st.weight, st.invstd,
                        grad_weight, grad_bias);
    }
    const float* a0 = constants->k0.data();
    const float* a1 = constants->k1.data();
    const float* a2 = constants->k2.data();
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

constexpr int64_t kBlockElems = 1024;  // values of a plane summed in float before the sums move to double

struct TwoSums {
  float a, b;
};

// The two sums of body(i) over a plane of n values: in float within blocks of kBlockElems, in double across them.
template <typename Body>
inline void plane_sums(int64_t n, Body body, double* total_a, double* total_b) {
  double da = 0, db = 0;
  for (int64_t block = 0; block < n; block += kBlockElems) {
    const int64_t end = std::min(block + kBlockElems, n);
    float a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (int64_t i = block; i < end; ++i) {
      const TwoSums v = body(i);
      a += v.a;
      b += v.b;
    }
    da += a;
    db += b;
  }
  *total_a = da;
  *total_b = db;
}

// The per-plane sums of the N planes of each channel, added in batch order (so any thread count gives the same bits).
inline void channel_totals(const std::vector<double>& plane_a, const std::vector<double>& plane_b, int64_t batch,
                           int64_t channels, double* a, double* b) {
  for (int64_t c = 0; c < channels; ++c) {
    a[c] = b[c] = 0.0;
    for (int64_t n = 0; n < batch; ++n) {
      a[c] += plane_a[n * channels + c];
      b[c] += plane_b[n * channels + c];
    }
  }
}

template <typename T>
void forward_planes(const T* x, int64_t batch, int64_t channels, int64_t plane, const Statistics& st, int threads,
                    T* out) {
  const int64_t planes = batch * channels;
  std::vector<double> plane_sum(planes), plane_sq(planes), sum(channels), sum_sq(channels);
  std::optional<ForwardConstants> constants;  // made by one thread, read by all
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const T* src = x + p * plane;
      plane_sums(plane, [&](int64_t i) {
        const float v = load(src[i]);
        return TwoSums{v, v * v};
      }, &plane_sum[p], &plane_sq[p]);
    }  // implicit barrier
#pragma omp single
    {
      channel_totals(plane_sum, plane_sq, batch, channels, sum.data(), sum_sq.data());
      constants.emplace(sum.data(), sum_sq.data(), batch * plane, channels, st.weight, st.bias, st.eps,
                        st.momentum, st.running_mean, st.running_var, st.mean, st.invstd);
    }
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const float sc = constants->scale[p % channels], sh = constants->shift[p % channels];
      const T* src = x + p * plane;
      T* o = out + p * plane;
#pragma omp simd
      for (int64_t i = 0; i < plane; ++i) {
        const float z = load(src[i]) * sc + sh;
        store(o + i, z * sigmoid(z));
      }
    }
  }
}

template <typename T>
void backward_planes(const T* grad, const T* x, int64_t batch, int64_t channels, int64_t plane, const Statistics& st,
                     int threads, T* grad_x, float* grad_weight, float* grad_bias) {
  const int64_t planes = batch * channels;
  std::vector<double> plane_dz(planes), plane_dz_xc(planes), sum_dz(channels), sum_dz_xc(channels);
  std::optional<BackwardConstants> constants;  // made by one thread, read by all
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const int64_t c = p % channels;
      const float sc = st.invstd[c] * st.weight[c], sh = st.bias[c] - st.mean[c] * sc, mu = st.mean[c];
      const T* src = x + p * plane;
      const T* g = grad + p * plane;
      T* dz_out = grad_x + p * plane;  // dz waits in grad_x for the second pass
      plane_sums(plane, [&](int64_t i) {
        const float v = load(src[i]);
        const float dz = silu_grad(load(g[i]), v * sc + sh);
        store(dz_out + i, dz);
        return TwoSums{dz, dz * (v - mu)};
      }, &plane_dz[p], &plane_dz_xc[p]);
    }
#pragma omp single
    {
      channel_totals(plane_dz, plane_dz_xc, batch, channels, sum_dz.data(), sum_dz_xc.data());
      constants.emplace(sum_dz.data(), sum_dz_xc.data(), batch * plane, channels, st.weight,
                        st.invstd, grad_weight, grad_bias);
    }
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const int64_t c = p % channels;
      const float a0 = constants->k0[c], a1 = constants->k1[c], a2 = constants->k2[c], mu = st.mean[c];
      const T* src = x + p * plane;
      T* o = grad_x + p * plane;
#pragma omp simd
      for (int64_t i = 0; i < plane; ++i) store(o + i, a0 * (load(o[i]) - a1 - (load(src[i]) - mu) * a2));
    }
  }
}

template <typename T>
void forward(const T* x, int64_t batch, int64_t channels, int64_t plane, int channels_last, const Statistics& st,
             int threads, T* out) {
  if (channels_last) {
    forward_rows(x, batch * plane, channels, st, threads, out);
  } else {
    forward_planes(x, batch, channels, plane, st, threads, out);
  }
}

template <typename T>
void backward(const T* grad, const T* x, int64_t batch, int64_t channels, int64_t plane, int channels_last,
              const Statistics& st, int threads, T* grad_x, float* grad_weight, float* grad_bias) {
  if (channels_last) {
    backward_rows(grad, x, batch * plane, channels, st, threads, grad_x, grad_weight, grad_bias);
  } else {
    backward_planes(grad, x, batch, channels, plane, st, threads, grad_x, grad_weight, grad_bias);
  }
}

}  // namespace

extern "C" {

// x is N x C x H x W with plane = H*W, channels_last (1) or contiguous (0). running_mean and running_var may be null
// (a BatchNorm that keeps no running statistics).
void bn_silu_forward_f32(const float* x, int64_t batch, int64_t channels, int64_t plane, int channels_last,
                         const float* weight, const float* bias, float eps, float momentum, float* running_mean,
                         float* running_var, int threads, float* out, float* mean, float* invstd) {
  const Statistics st{weight, bias, eps, momentum, running_mean, running_var, mean, invstd};
  forward(x, batch, channels, plane, channels_last, st, threads, out);
}

void bn_silu_forward_bf16(const uint16_t* x, int64_t batch, int64_t channels, int64_t plane, int channels_last,
                          const float* weight, const float* bias, float eps, float momentum, float* running_mean,
                          float* running_var, int threads, uint16_t* out, float* mean, float* invstd) {
  const Statistics st{weight, bias, eps, momentum, running_mean, running_var, mean, invstd};
  forward(reinterpret_cast<const BF16*>(x), batch, channels, plane, channels_last, st, threads,
          reinterpret_cast<BF16*>(out));
}

void bn_silu_backward_f32(const float* grad, const float* x, int64_t batch, int64_t channels, int64_t plane,
                          int channels_last, const float* mean, const float* invstd, const float* weight,
                          const float* bias, int threads, float* grad_x, float* grad_weight, float* grad_bias) {
  const Statistics st{weight, bias, 0.0f, 0.0f, nullptr, nullptr, const_cast<float*>(mean), const_cast<float*>(invstd)};
  backward(grad, x, batch, channels, plane, channels_last, st, threads, grad_x, grad_weight, grad_bias);
}

void bn_silu_backward_bf16(const uint16_t* grad, const uint16_t* x, int64_t batch, int64_t channels, int64_t plane,
                           int channels_last, const float* mean, const float* invstd, const float* weight,
                           const float* bias, int threads, uint16_t* grad_x, float* grad_weight, float* grad_bias) {
  const Statistics st{weight, bias, 0.0f, 0.0f, nullptr, nullptr, const_cast<float*>(mean), const_cast<float*>(invstd)};
  backward(reinterpret_cast<const BF16*>(grad), reinterpret_cast<const BF16*>(x), batch, channels, plane,
           channels_last, st, threads, reinterpret_cast<BF16*>(grad_x), grad_weight, grad_bias);
}

}  // extern "C"
