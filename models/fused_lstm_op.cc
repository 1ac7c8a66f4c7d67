// pulsecast's fused LSTM for CPU training: TensorFlow ops `PulsecastLstm` (forward) and
// `PulsecastLstmGrad` (its gradient), built and loaded by models/fused_lstm.py.
//
// Same maths and weight layout as Keras' LSTM (gate order i, f, g, o; kernel (D, 4H), recurrent
// kernel (H, 4H), bias (4H); sigmoid gates, tanh cell). Why it exists: a Keras/TensorFlow LSTM
// step is a handful of small ops per time step, forward and backward, and on CPU the per-op
// overhead costs more than the arithmetic (docs/performance.md). Here one native loop runs a
// whole sequence: per step one sgemm forward (h @ U), two backward (dz @ U^T and h^T @ dz), through
// the OpenBLAS that numpy ships, and the gate arithmetic in one vectorised pass. The batch is cut
// into one shard
// per intra-op thread; each shard runs its own recurrence (rows of a batch never interact), with
// OpenBLAS single-threaded inside it. The backward pass adds each step's recurrent-kernel gradient
// (h_prev[t]^T @ dz_t) while that step's dz is still in cache, into one partial sum per shard.
//
// Layouts: x (B, T, D), h_seq (B, T, H) batch-major like Keras; the workspace outputs gates
// (T, B, 4H: activated i, f, g, o), c_seq (T, B, H) and h_prev (T, B, H: the state each step
// read, h0 at t = 0) are time-major so that one step of one shard is a contiguous row block.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/threadpool.h"

extern "C" void scipy_cblas_sgemm64_(int64_t order, int64_t ta, int64_t tb, int64_t m, int64_t n,
                                     int64_t k, float alpha, const float* a, int64_t lda,
                                     const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
extern "C" int openblas_set_num_threads_local(int num_threads);

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };

// C (m x n) = op(A) (m x k) @ op(B) (k x n) + beta * C, row-major.
inline void Gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                 const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  scipy_cblas_sgemm64_(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, 1.0f, a,
                       lda, b, ldb, beta, c, ldc);
}

// The sigmoid through tanh, not 1 / (1 + exp(-v)): under -ffast-math that division may become a
// reciprocal estimate plus a Newton step, which turns 1 / inf (v below about -88) into NaN. glibc's
// vector tanhf saturates to +-1 and keeps NaN as NaN.
inline float Sigmoid(float v) { return 0.5f * std::tanh(0.5f * v) + 0.5f; }
inline float Tanh(float v) { return std::tanh(v); }

// Inputs with D at most this many channels are projected with an inline loop, wider ones by sgemm.
constexpr int64_t kInlineChannels = 8;

// Runs fn(shard, begin, end) over contiguous row ranges of [0, rows), at most one per intra-op
// thread, with OpenBLAS single-threaded in each (the shards are the parallelism).
void ForEachShard(OpKernelContext* ctx, int64_t rows,
                  const std::function<void(int64_t, int64_t, int64_t)>& fn) {
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  // A shard below 16 rows costs more in sgemm call overhead than it saves.
  int64_t shards = std::max<int64_t>(1, std::min<int64_t>(pool->NumThreads(), rows / 16));
  auto run = [&](int64_t s) {
    int64_t begin = rows * s / shards, end = rows * (s + 1) / shards;
    int previous = openblas_set_num_threads_local(1);
    fn(s, begin, end);
    openblas_set_num_threads_local(previous);
  };
  if (shards == 1) {
    run(0);
    return;
  }
  pool->ParallelFor(shards, /*cost_per_unit=*/int64_t{1} << 40, [&](int64_t first, int64_t last) {
    for (int64_t s = first; s < last; ++s) run(s);
  });
}

absl::Status CheckRank(const Tensor& t, int rank, const char* name) {
  if (t.dims() != rank) {
    return InvalidArgument(name, " must have rank ", rank, ", got shape ", t.shape().DebugString());
  }
  return absl::OkStatus();
}

class PulsecastLstmOp : public OpKernel {
 public:
  explicit PulsecastLstmOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& h0 = ctx->input(1);
    const Tensor& c0 = ctx->input(2);
    const Tensor& kernel = ctx->input(3);
    const Tensor& recurrent = ctx->input(4);
    const Tensor& bias = ctx->input(5);
    OP_REQUIRES_OK(ctx, CheckRank(x, 3, "x"));
    OP_REQUIRES_OK(ctx, CheckRank(recurrent, 2, "recurrent_kernel"));
    const int64_t B = x.dim_size(0), T = x.dim_size(1), D = x.dim_size(2);
    const int64_t H = recurrent.dim_size(0), G = 4 * H;
    OP_REQUIRES(ctx, T > 0, InvalidArgument("x must have at least one time step, got shape ",
                                            x.shape().DebugString()));
    OP_REQUIRES(ctx, recurrent.dim_size(1) == G,
                InvalidArgument("recurrent_kernel must be (H, 4H), got ", recurrent.shape().DebugString()));
    OP_REQUIRES(ctx, kernel.dims() == 2 && kernel.dim_size(0) == D && kernel.dim_size(1) == G,
                InvalidArgument("kernel must be (", D, ", ", G, "), got ", kernel.shape().DebugString()));
    OP_REQUIRES(ctx, bias.dims() == 1 && bias.dim_size(0) == G,
                InvalidArgument("bias must be (", G, "), got ", bias.shape().DebugString()));
    for (const Tensor* s : {&h0, &c0}) {
      OP_REQUIRES(ctx, s->dims() == 2 && s->dim_size(0) == B && s->dim_size(1) == H,
                  InvalidArgument("initial states must be (", B, ", ", H, "), got ", s->shape().DebugString()));
    }
    Tensor *h_seq, *c_last, *gates, *c_seq, *h_prev;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, H}), &h_seq));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, H}), &c_last));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({T, B, G}), &gates));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({T, B, H}), &c_seq));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({T, B, H}), &h_prev));
    if (B == 0 || H == 0) return;

    const float* xp = x.flat<float>().data();
    const float* W = kernel.flat<float>().data();
    const float* U = recurrent.flat<float>().data();
    const float* bp = bias.flat<float>().data();
    const float* h0p = h0.flat<float>().data();
    const float* c0p = c0.flat<float>().data();
    float* hs = h_seq->flat<float>().data();
    float* cl = c_last->flat<float>().data();
    float* zs = gates->flat<float>().data();
    float* cs = c_seq->flat<float>().data();
    float* hp = h_prev->flat<float>().data();

    ForEachShard(ctx, B, [&](int64_t, int64_t b0, int64_t b1) {
      const int64_t n = b1 - b0;
      std::memcpy(hp + b0 * H, h0p + b0 * H, sizeof(float) * n * H);  // h_prev[0] = h0
      for (int64_t t = 0; t < T; ++t) {
        float* z = zs + (t * B + b0) * G;
        const float* xt = xp + (b0 * T + t) * D;  // row r at xt + r * T * D
        if (D <= kInlineChannels) {
          for (int64_t r = 0; r < n; ++r) {
            float* zr = z + r * G;
            const float* xr = xt + r * T * D;
#pragma omp simd
            for (int64_t g = 0; g < G; ++g) zr[g] = bp[g];
            for (int64_t d = 0; d < D; ++d) {
              const float xv = xr[d];
              const float* Wd = W + d * G;
#pragma omp simd
              for (int64_t g = 0; g < G; ++g) zr[g] += xv * Wd[g];
            }
          }
        } else {
          for (int64_t r = 0; r < n; ++r) std::memcpy(z + r * G, bp, sizeof(float) * G);
          Gemm(false, false, n, G, D, xt, T * D, W, G, 1.0f, z, G);
        }
        const float* hin = hp + (t * B + b0) * H;
        Gemm(false, false, n, G, H, hin, H, U, G, 1.0f, z, G);
        const float* cprev = t ? cs + ((t - 1) * B + b0) * H : c0p + b0 * H;
        float* ct = cs + (t * B + b0) * H;
        float* hnext = t + 1 < T ? hp + ((t + 1) * B + b0) * H : nullptr;
        for (int64_t r = 0; r < n; ++r) {
          float* zr = z + r * G;
          float* hout = hs + ((b0 + r) * T + t) * H;
#pragma omp simd
          for (int64_t j = 0; j < H; ++j) {
            const float i = Sigmoid(zr[j]), f = Sigmoid(zr[H + j]);
            const float g = Tanh(zr[2 * H + j]), o = Sigmoid(zr[3 * H + j]);
            const float c = f * cprev[r * H + j] + i * g;
            zr[j] = i;
            zr[H + j] = f;
            zr[2 * H + j] = g;
            zr[3 * H + j] = o;
            ct[r * H + j] = c;
            hout[j] = o * Tanh(c);
          }
          if (hnext) std::memcpy(hnext + r * H, hout, sizeof(float) * H);
        }
      }
      std::memcpy(cl + b0 * H, cs + ((T - 1) * B + b0) * H, sizeof(float) * n * H);
    });
  }
};

class PulsecastLstmGradOp : public OpKernel {
 public:
  explicit PulsecastLstmGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& c0 = ctx->input(1);
    const Tensor& kernel = ctx->input(2);
    const Tensor& recurrent = ctx->input(3);
    const Tensor& gates = ctx->input(4);
    const Tensor& c_seq = ctx->input(5);
    const Tensor& h_prev = ctx->input(6);
    const Tensor& d_h_seq = ctx->input(7);
    const Tensor& d_c_last = ctx->input(8);
    OP_REQUIRES_OK(ctx, CheckRank(x, 3, "x"));
    const int64_t B = x.dim_size(0), T = x.dim_size(1), D = x.dim_size(2);
    const int64_t H = recurrent.dim_size(0), G = 4 * H;
    OP_REQUIRES(ctx, gates.dims() == 3 && gates.dim_size(0) == T && gates.dim_size(1) == B &&
                         gates.dim_size(2) == G,
                InvalidArgument("gates must be (T, B, 4H), got ", gates.shape().DebugString()));
    OP_REQUIRES(ctx, d_h_seq.shape() == TensorShape({B, T, H}),
                InvalidArgument("d_h_seq must be (B, T, H), got ", d_h_seq.shape().DebugString()));
    OP_REQUIRES(ctx, d_c_last.shape() == TensorShape({B, H}),
                InvalidArgument("d_c_last must be (B, H), got ", d_c_last.shape().DebugString()));
    Tensor *dx, *dh0, *dc0, *dkernel, *drecurrent, *dbias;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({B, H}), &dh0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({B, H}), &dc0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, kernel.shape(), &dkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, recurrent.shape(), &drecurrent));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, TensorShape({G}), &dbias));

    const float* xp = x.flat<float>().data();
    const float* c0p = c0.flat<float>().data();
    const float* W = kernel.flat<float>().data();
    const float* U = recurrent.flat<float>().data();
    const float* zs = gates.flat<float>().data();
    const float* cs = c_seq.flat<float>().data();
    const float* hp = h_prev.flat<float>().data();
    const float* dhs = d_h_seq.flat<float>().data();
    const float* dcl = d_c_last.flat<float>().data();
    float* dxp = dx->flat<float>().data();
    float* dh0p = dh0->flat<float>().data();
    float* dc0p = dc0->flat<float>().data();
    float* dW = dkernel->flat<float>().data();
    float* dU = drecurrent->flat<float>().data();
    float* db = dbias->flat<float>().data();
    std::fill(dW, dW + D * G, 0.0f);
    std::fill(db, db + G, 0.0f);
    std::fill(dU, dU + H * G, 0.0f);
    if (B == 0 || H == 0 || T == 0) {
      std::fill(dxp, dxp + B * T * D, 0.0f);
      std::fill(dh0p, dh0p + B * H, 0.0f);
      std::fill(dc0p, dc0p + B * H, 0.0f);
      return;
    }

    // Per-shard partial sums of the kernel, bias and recurrent-kernel gradients, added up after
    // the shards. dz of one step lives in a per-shard buffer (n x 4H, cache-resident) and goes
    // into dU at once (dU += h_prev[t]^T @ dz_t): no (T, B, 4H) workspace written and read back.
    const int64_t max_shards = ctx->device()->tensorflow_cpu_worker_threads()->workers->NumThreads();
    const int64_t part = (D + 1 + H) * G;
    std::vector<float> partial(max_shards * part, 0.0f);
    ForEachShard(ctx, B, [&](int64_t shard, int64_t b0, int64_t b1) {
      const int64_t n = b1 - b0;
      float* pW = partial.data() + shard * part;
      float* pb = pW + D * G;
      float* pU = pb + G;
      std::vector<float> dzbuf(n * G);
      float* dz = dzbuf.data();
      float* dh = dh0p + b0 * H;  // the carried dL/dh; ends as dL/dh0
      float* dc = dc0p + b0 * H;  // the carried dL/dc; ends as dL/dc0
      std::fill(dh, dh + n * H, 0.0f);
      std::memcpy(dc, dcl + b0 * H, sizeof(float) * n * H);
      for (int64_t t = T - 1; t >= 0; --t) {
        const float* s = zs + (t * B + b0) * G;
        const float* ct = cs + (t * B + b0) * H;
        const float* cprev = t ? cs + ((t - 1) * B + b0) * H : c0p + b0 * H;
        for (int64_t r = 0; r < n; ++r) {
          const float* sr = s + r * G;
          const float* dhr_out = dhs + ((b0 + r) * T + t) * H;
          float* q = dz + r * G;
#pragma omp simd
          for (int64_t j = 0; j < H; ++j) {
            const float i = sr[j], f = sr[H + j], g = sr[2 * H + j], o = sr[3 * H + j];
            const float tc = Tanh(ct[r * H + j]);
            const float dhj = dh[r * H + j] + dhr_out[j];
            const float d = dc[r * H + j] + dhj * o * (1.0f - tc * tc);
            q[j] = d * g * i * (1.0f - i);
            q[H + j] = d * cprev[r * H + j] * f * (1.0f - f);
            q[2 * H + j] = d * i * (1.0f - g * g);
            q[3 * H + j] = dhj * tc * o * (1.0f - o);
            dc[r * H + j] = d * f;
          }
          const float* xr = xp + ((b0 + r) * T + t) * D;
#pragma omp simd
          for (int64_t k = 0; k < G; ++k) pb[k] += q[k];
          if (D <= kInlineChannels) {
            float* dxr = dxp + ((b0 + r) * T + t) * D;
            for (int64_t d = 0; d < D; ++d) {
              const float xv = xr[d];
              const float* Wd = W + d * G;
              float* pWd = pW + d * G;
              float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
              for (int64_t k = 0; k < G; ++k) {
                pWd[k] += xv * q[k];
                acc += q[k] * Wd[k];
              }
              dxr[d] = acc;
            }
          }
        }
        if (D > kInlineChannels) {
          // dx_t = dz_t @ W^T; dW += x_t^T @ dz_t
          Gemm(false, true, n, D, G, dz, G, W, G, 0.0f, dxp + (b0 * T + t) * D, T * D);
          Gemm(true, false, D, G, n, xp + (b0 * T + t) * D, T * D, dz, G, 1.0f, pW, G);
        }
        Gemm(true, false, H, G, n, hp + (t * B + b0) * H, H, dz, G, 1.0f, pU, G);  // dU
        Gemm(false, true, n, H, G, dz, G, U, G, 0.0f, dh, H);  // dh = dz_t @ U^T
      }
    });
    for (int64_t s = 0; s < max_shards; ++s) {
      const float* pW = partial.data() + s * part;
      for (int64_t k = 0; k < D * G; ++k) dW[k] += pW[k];
      for (int64_t k = 0; k < G; ++k) db[k] += pW[D * G + k];
      for (int64_t k = 0; k < H * G; ++k) dU[k] += pW[(D + 1) * G + k];
    }
  }
};

}  // namespace

REGISTER_OP("PulsecastLstm")
    .Input("x: float")
    .Input("h0: float")
    .Input("c0: float")
    .Input("kernel: float")
    .Input("recurrent_kernel: float")
    .Input("bias: float")
    .Output("h_seq: float")
    .Output("c_last: float")
    .Output("gates: float")
    .Output("c_seq: float")
    .Output("h_prev: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, u;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 2, &u));
      DimensionHandle B = c->Dim(x, 0), T = c->Dim(x, 1), H = c->Dim(u, 0), G = c->Dim(u, 1);
      c->set_output(0, c->MakeShape({B, T, H}));
      c->set_output(1, c->MakeShape({B, H}));
      c->set_output(2, c->MakeShape({T, B, G}));
      c->set_output(3, c->MakeShape({T, B, H}));
      c->set_output(4, c->MakeShape({T, B, H}));
      return absl::OkStatus();
    })
    .Doc("One LSTM pass over x (B, T, D), Keras gate order; see models/fused_lstm_op.cc.");

REGISTER_OP("PulsecastLstmGrad")
    .Input("x: float")
    .Input("c0: float")
    .Input("kernel: float")
    .Input("recurrent_kernel: float")
    .Input("gates: float")
    .Input("c_seq: float")
    .Input("h_prev: float")
    .Input("d_h_seq: float")
    .Input("d_c_last: float")
    .Output("dx: float")
    .Output("dh0: float")
    .Output("dc0: float")
    .Output("dkernel: float")
    .Output("drecurrent_kernel: float")
    .Output("dbias: float")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, u;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &u));
      c->set_output(0, c->input(0));
      c->set_output(1, c->MakeShape({c->Dim(x, 0), c->Dim(u, 0)}));
      c->set_output(2, c->MakeShape({c->Dim(x, 0), c->Dim(u, 0)}));
      c->set_output(3, c->input(2));
      c->set_output(4, c->input(3));
      c->set_output(5, c->MakeShape({c->Dim(u, 1)}));
      return absl::OkStatus();
    })
    .Doc("Gradient of PulsecastLstm with respect to x, h0, c0, kernel, recurrent_kernel, bias.");

REGISTER_KERNEL_BUILDER(Name("PulsecastLstm").Device(tensorflow::DEVICE_CPU), PulsecastLstmOp);
REGISTER_KERNEL_BUILDER(Name("PulsecastLstmGrad").Device(tensorflow::DEVICE_CPU), PulsecastLstmGradOp);
