// Feasibility probe (issue 4, CPU speed): one fused LSTM forward + backward pass over a batch of
// windows at the reference shape (T=256 steps, B=256 windows, 1 channel, H=64 units; Keras gate
// order i, f, g, o; loss = sum of the last hidden state), in plain C++ with the sgemm of numpy's
// bundled OpenBLAS. Not part of pulsecast: it measures how fast a native kernel could train, and
// with an output folder it writes its inputs and results for bench/probes/check_fused_lstm.py,
// which compares them with Keras autodiff. Build and run: see docs/performance.md.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>
#include <chrono>
#include <random>
#include <string>
extern "C" void scipy_cblas_sgemm64_(int64_t order, int64_t ta, int64_t tb, int64_t m, int64_t n, int64_t k,
    float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
static inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                        const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  scipy_cblas_sgemm64_(RowMajor, ta ? Trans : NoTrans, tb ? Trans : NoTrans, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}
static inline float sig(float x) { return 1.0f / (1.0f + std::exp(-x)); }
int main(int argc, char** argv) {
  const int T = 256, B = 256, H = 64, G = 4 * H;
  std::mt19937 rng(0); std::normal_distribution<float> nd;
  std::vector<float> x(T * B), W(G), U(H * G), bias(G, 0.f);
  for (auto& v : x) v = nd(rng); for (auto& v : W) v = 0.3f * nd(rng); for (auto& v : U) v = 0.1f * nd(rng);
  std::vector<float> S(T * B * G), C(T * B * H), Hs((T + 1) * B * H), dZ(T * B * G), dU(H * G);
  std::vector<float> dh(B * H), dc(B * H), dW(G), db(G);
  auto step = [&]() {
    std::fill(Hs.begin(), Hs.begin() + B * H, 0.f);
    for (int t = 0; t < T; ++t) {
      float* zt = &S[(size_t)t * B * G];
      for (int b = 0; b < B; ++b) for (int g = 0; g < G; ++g) zt[b * G + g] = x[t * B + b] * W[g] + bias[g];
      gemm(false, false, B, G, H, &Hs[(size_t)t * B * H], H, U.data(), G, 1.0f, zt, G);
      const float* cp = t ? &C[(size_t)(t - 1) * B * H] : nullptr; float* ct = &C[(size_t)t * B * H];
      float* hn = &Hs[(size_t)(t + 1) * B * H];
      for (int b = 0; b < B; ++b) {
        float* r = zt + b * G;
        #pragma omp simd
        for (int j = 0; j < H; ++j) {
          float i = sig(r[j]), f = sig(r[H + j]), g = std::tanh(r[2 * H + j]), o = sig(r[3 * H + j]);
          float c = f * (cp ? cp[b * H + j] : 0.f) + i * g;
          r[j] = i; r[H + j] = f; r[2 * H + j] = g; r[3 * H + j] = o;
          ct[b * H + j] = c; hn[b * H + j] = o * std::tanh(c);
        }
      }
    }
    std::fill(dh.begin(), dh.end(), 1.f); std::fill(dc.begin(), dc.end(), 0.f);
    for (int t = T - 1; t >= 0; --t) {
      const float* s = &S[(size_t)t * B * G]; const float* ct = &C[(size_t)t * B * H];
      const float* cp = t ? &C[(size_t)(t - 1) * B * H] : nullptr; float* dz = &dZ[(size_t)t * B * G];
      for (int b = 0; b < B; ++b) {
        #pragma omp simd
        for (int j = 0; j < H; ++j) {
          const float* r = s + b * G; float i = r[j], f = r[H + j], g = r[2 * H + j], o = r[3 * H + j];
          float tc = std::tanh(ct[b * H + j]); float cpv = cp ? cp[b * H + j] : 0.f;
          float d = dc[b * H + j] + dh[b * H + j] * o * (1 - tc * tc);
          float* q = dz + b * G;
          q[j] = d * g * i * (1 - i); q[H + j] = d * cpv * f * (1 - f); q[2 * H + j] = d * i * (1 - g * g);
          q[3 * H + j] = dh[b * H + j] * tc * o * (1 - o); dc[b * H + j] = d * f;
        }
      }
      gemm(false, true, B, H, G, dz, G, U.data(), G, 0.0f, dh.data(), H);  // dh = dz @ U^T
    }
    gemm(true, false, H, G, (int64_t)T * B, Hs.data(), H, dZ.data(), G, 0.0f, dU.data(), G);  // dU = H^T dZ
    std::fill(dW.begin(), dW.end(), 0.f); std::fill(db.begin(), db.end(), 0.f);
    for (int t = 0; t < T; ++t) for (int b = 0; b < B; ++b) {
      const float* q = &dZ[((size_t)t * B + b) * G]; float xv = x[t * B + b];
      for (int g = 0; g < G; ++g) { dW[g] += xv * q[g]; db[g] += q[g]; }
    }
  };
  step();
  if (argc > 1) {  // dump for the Keras comparison: raw float32, shapes in check_fused_lstm.py
    auto dump = [&](const char* name, const float* p, size_t n) {
      FILE* f = std::fopen((std::string(argv[1]) + "/" + name).c_str(), "wb");
      std::fwrite(p, sizeof(float), n, f); std::fclose(f);
    };
    dump("x", x.data(), x.size()); dump("W", W.data(), W.size()); dump("U", U.data(), U.size());
    dump("h", &Hs[(size_t)T * B * H], (size_t)B * H); dump("dW", dW.data(), G);
    dump("dU", dU.data(), dU.size()); dump("db", db.data(), G);
  }
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = std::chrono::steady_clock::now(); int n = 8;
    for (int k = 0; k < n; ++k) step();
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("fused C++ fwd+bwd: %.0f windows/s (h[0]=%g dU[0]=%g)\n", B * n / dt, Hs[(size_t)T * B * H], dU[0]);
  }
}
