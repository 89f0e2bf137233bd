// out[M, N] = x[M, K] @ w[K, N] for few rows: the weight products of a decode step. x and out
// are float32; w is float32 or bfloat16 (widened in registers, accumulated in float32).
//
// XLA:CPU hands these to a general GEMM that repacks the weight matrix on every call and, from
// 2 rows on, reaches about half of the memory bandwidth that reading the weights once needs
// (see phi4_jax/kernels/__init__.py for the measurements). Here the weight is packed once, ahead
// of time, into column panels: `panels` is [P, K, 32] with panels[p, k, c] = w[k, 32 p + c]
// (columns past N are zero), so one panel is a contiguous stream of K * 128 bytes. The kernel
// reads each panel exactly once from memory and applies it to up to 8 rows of x at a time,
// whose 8 x 32 accumulators stay in 16 vector registers for the whole K loop; further groups of
// 8 rows re-read the panel from L2. out is [M, 32 P].
//
// Work split: the panels are shared out in contiguous runs to the XLA intra-op thread pool (the
// calling thread runs one run itself and then waits for the others).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kPanel = 32;  // columns per panel: two vectors of 16 floats
constexpr int64_t kAhead = 32;  // panel rows prefetched ahead (4 KiB of float32 weights)
typedef float v16 __attribute__((vector_size(64), aligned(4)));

inline v16 Load(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, v16 v) { std::memcpy(p, &v, sizeof(v)); }

typedef uint16_t u16x16 __attribute__((vector_size(32), aligned(2)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));

// 16 weights of a panel row as float32: float32 panels are read as they are; bfloat16 panels
// (half the bytes to stream) are widened exactly (a bfloat16 is the top half of a float32).
inline v16 LoadWeights(const float* p) { return Load(p); }
inline v16 LoadWeights(const uint16_t* p) {
  u16x16 h;
  std::memcpy(&h, p, sizeof(h));
  const u32x16 bits = __builtin_convertvector(h, u32x16) << 16;
  v16 v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

// Rows [0, R) of x (row stride k) times one panel [K, 32] -> out rows (row stride n).
template <int R, typename W>
void Block(const float* __restrict x, const W* __restrict panel, float* __restrict out,
           int64_t k, int64_t n) {
  constexpr int64_t kAheadElems = kAhead * kPanel;
  constexpr int64_t kLine = 64 / sizeof(W);  // elements per cache line
  v16 lo[R], hi[R];
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = v16{};
  for (int64_t kk = 0; kk < k; ++kk) {
    for (int64_t e = 0; e < kPanel; e += kLine)
      __builtin_prefetch(panel + kk * kPanel + kAheadElems + e);
    const v16 a = LoadWeights(panel + kk * kPanel), b = LoadWeights(panel + kk * kPanel + 16);
    for (int r = 0; r < R; ++r) {
      const float s = x[r * k + kk];
      lo[r] += a * s;
      hi[r] += b * s;
    }
  }
  for (int r = 0; r < R; ++r) {
    Store(out + r * n, lo[r]);
    Store(out + r * n + 16, hi[r]);
  }
}

template <typename W>
void Panel(const float* x, const W* panel, float* out, int64_t m, int64_t k, int64_t n) {
  int64_t r = 0;
  for (; r + 8 <= m; r += 8) Block<8>(x + r * k, panel, out + r * n, k, n);
  switch (m - r) {
    case 7: Block<7>(x + r * k, panel, out + r * n, k, n); break;
    case 6: Block<6>(x + r * k, panel, out + r * n, k, n); break;
    case 5: Block<5>(x + r * k, panel, out + r * n, k, n); break;
    case 4: Block<4>(x + r * k, panel, out + r * n, k, n); break;
    case 3: Block<3>(x + r * k, panel, out + r * n, k, n); break;
    case 2: Block<2>(x + r * k, panel, out + r * n, k, n); break;
    case 1: Block<1>(x + r * k, panel, out + r * n, k, n); break;
    default: break;
  }
}

template <ffi::DataType T>
ffi::Error SmallMatmulImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                           ffi::Buffer<T> panels, ffi::ResultBuffer<ffi::F32> out) {
  using W = std::conditional_t<T == ffi::F32, float, uint16_t>;
  const auto xd = x.dimensions(), pd = panels.dimensions();
  if (xd.size() != 2 || pd.size() != 3 || pd[2] != kPanel || xd[1] != pd[1])
    return ffi::Error::InvalidArgument(
        "phi4 small_matmul: need x [M, K] and panels [P, K, 32]");
  const int64_t m = xd[0], k = xd[1], count = pd[0], n = count * kPanel;
  const float* xp = x.typed_data();
  const W* pp = reinterpret_cast<const W*>(panels.untyped_data());
  float* op = out->typed_data();
  auto run = [=](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) Panel(xp, pp + p * k * kPanel, op + p * kPanel, m, k, n);
  };
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), count));
  if (workers == 1) {
    run(0, count);
    return ffi::Error::Success();
  }
  std::atomic<int64_t> pending(workers - 1);
  for (int64_t s = 1; s < workers; ++s)
    pool.Schedule([&pending, run, s, count, workers] {
      run(count * s / workers, count * (s + 1) / workers);
      pending.fetch_sub(1, std::memory_order_release);
    });
  run(0, count / workers);
  while (pending.load(std::memory_order_acquire) != 0) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
  return ffi::Error::Success();
}

}  // namespace

// One binding for both weight types: activations and output are float32, the packed panels
// float32 or bfloat16 (widened in registers).
#define PHI4_SMALL_MATMUL_HANDLER(name, weight_type)                                      \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, SmallMatmulImpl<ffi::weight_type>,                 \
                                ffi::Ffi::Bind()                                         \
                                    .Ctx<ffi::ThreadPool>()                              \
                                    .Arg<ffi::Buffer<ffi::F32>>()                        \
                                    .Arg<ffi::Buffer<ffi::weight_type>>()                \
                                    .Ret<ffi::Buffer<ffi::F32>>())

PHI4_SMALL_MATMUL_HANDLER(Phi4SmallMatmul, F32);
PHI4_SMALL_MATMUL_HANDLER(Phi4SmallMatmulBf16, BF16);
