// In-register loops with each kernel's inner instruction mix, compiled for each ISA by target pragmas
// (the rest of the benchmark is built for the baseline ISA and calls these only where the CPU has it).
// Each loop keeps 16 (AVX2: 12) independent accumulator chains, enough to cover the latency of any of these
// instructions, and an empty asm statement makes the loop-invariant operands opaque so the compiler
// cannot hoist the work. Where a group does not read its accumulator (lookups, shifts), the statement follows
// every group: identical groups of one iteration would otherwise be merged into one (common subexpressions),
// which measured the float add alone, while the kernels' groups read different tables and addends.
// Products per instruction group: f32 FMA: lanes; binary lookup: 4 * lanes;
// ternary lookup: 3 * lanes; shift (integer add + float add): lanes; xnor (xor + popcount + add): 64 * lanes64.
#include "roofline.hpp"

#include <chrono>
#include <map>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
// GCC 12's own _mm512 helpers trip -Wuninitialized (as in the AVX-512 kernel units).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace fewmul_bench {
namespace {

constexpr long iterations = 1 << 22;

template <class F>
double products_per_second(F&& loop, double products_per_iteration) {
  loop(iterations / 16);  // warm up (clock ramp)
  const auto start = std::chrono::steady_clock::now();
  loop(iterations);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return products_per_iteration * static_cast<double>(iterations) / seconds;
}

#if defined(__x86_64__)
#define FEWMUL_OPAQUE(x) __asm__ volatile("" : "+v"(x))
// The loops run on local copies of the accumulators and operands, which the compiler keeps in registers.
#define LOCAL_ACC(type, from)                  \
  type a[16];                                  \
  for (int i = 0; i < 16; ++i) a[i] = from[i]; \
  [[maybe_unused]] auto x = x_in;              \
  [[maybe_unused]] auto y = y_in;              \
  [[maybe_unused]] auto idx = idx_in;          \
  [[maybe_unused]] auto addend = addend_in;    \
  [[maybe_unused]] auto words = words_in
#define STORE_ACC(to) \
  for (int i = 0; i < 16; ++i) to[i] = a[i]
volatile float sink;

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vpopcntdq")
double avx512_peak(mix m, bool vpopcnt) {
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  const __m512 x_in = _mm512_set1_ps(1.0001f), y_in = _mm512_set1_ps(0.5f), t2 = _mm512_set1_ps(2.0f);
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512i idx_in = _mm512_set1_epi32(3), addend_in = _mm512_set1_epi32(1 << 23);
  const __m512i words_in = _mm512_set1_epi64(0x5555);
  __m512i acc64[16];
  for (int i = 0; i < 16; ++i) acc64[i] = _mm512_set1_epi64(i);
  const __m512i table =
      _mm512_set_epi8(4, 3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0, 4, 3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0, 4,
                      3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0, 4, 3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0);
  auto finish = [&] {
    __m512 s = acc[0];
    for (int i = 1; i < 16; ++i) s = _mm512_add_ps(s, acc[i]);
    __m512i w = acc64[0];
    for (int i = 1; i < 16; ++i) w = _mm512_add_epi64(w, acc64[i]);
    sink = _mm512_reduce_add_ps(s) + static_cast<float>(_mm512_reduce_add_epi64(w));
  };
  double rate = 0;
  switch (m) {
    case mix::f32_fma:
      rate = products_per_second(
          [&](long n) {
            LOCAL_ACC(__m512, acc);
            for (long it = 0; it < n; ++it) {
              for (int i = 0; i < 16; ++i) a[i] = _mm512_fmadd_ps(a[i], x, y);
              FEWMUL_OPAQUE(x);
            }
            STORE_ACC(acc);
          },
          16.0 * 16);
      break;
    case mix::binary_lookup:
      rate = products_per_second(
          [&](long n) {
            LOCAL_ACC(__m512, acc);
            for (long it = 0; it < n; ++it) {
              for (int i = 0; i < 16; ++i) {  // as the kernels: odd columns' sums on the FMA unit, x * 1 + acc
                const __m512 entry = _mm512_permutexvar_ps(idx, x);
                a[i] = i % 2 ? _mm512_fmadd_ps(entry, one, a[i]) : _mm512_add_ps(a[i], entry);
                FEWMUL_OPAQUE(idx);
              }
              FEWMUL_OPAQUE(x);
            }
            STORE_ACC(acc);
          },
          16.0 * 16 * 4);
      break;
    case mix::ternary_lookup:
      rate = products_per_second(
          [&](long n) {
            LOCAL_ACC(__m512, acc);
            for (long it = 0; it < n; ++it) {
              for (int i = 0; i < 16; ++i) {
                a[i] = _mm512_add_ps(a[i], _mm512_permutex2var_ps(x, idx, t2));
                FEWMUL_OPAQUE(idx);
              }
              FEWMUL_OPAQUE(x);
            }
            STORE_ACC(acc);
          },
          16.0 * 16 * 3);
      break;
    case mix::shift_add:
      rate = products_per_second(
          [&](long n) {
            LOCAL_ACC(__m512, acc);
            for (long it = 0; it < n; ++it) {
              for (int i = 0; i < 16; ++i) {
                a[i] = _mm512_add_ps(a[i], _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(y), addend)));
                FEWMUL_OPAQUE(addend);
              }
              FEWMUL_OPAQUE(y);
            }
            STORE_ACC(acc);
          },
          16.0 * 16);
      break;
    case mix::xnor_popcount:
      if (vpopcnt) {
        rate = products_per_second(
            [&](long n) {
              LOCAL_ACC(__m512i, acc64);
              for (long it = 0; it < n; ++it) {
                for (int i = 0; i < 16; ++i)
                  a[i] = _mm512_add_epi64(a[i], _mm512_popcnt_epi64(_mm512_xor_si512(words, a[i])));
                FEWMUL_OPAQUE(words);
              }
              STORE_ACC(acc64);
            },
            16.0 * 512);
      } else {
        const __m512i low = _mm512_set1_epi8(0x0f);
        rate = products_per_second(
            [&](long n) {
              LOCAL_ACC(__m512i, acc64);
              for (long it = 0; it < n; ++it) {
                for (int i = 0; i < 16; ++i) {
                  const __m512i v = _mm512_xor_si512(words, a[i]);
                  const __m512i counts =
                      _mm512_add_epi8(_mm512_shuffle_epi8(table, _mm512_and_si512(v, low)),
                                      _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(v, 4), low)));
                  a[i] = _mm512_add_epi64(a[i], _mm512_sad_epu8(counts, _mm512_setzero_si512()));
                }
                FEWMUL_OPAQUE(words);
              }
              STORE_ACC(acc64);
            },
            16.0 * 512);
      }
      break;
  }
  finish();
  return rate;
}

#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
double avx2_peak(mix m) {  // 12 chains: AVX2 has 16 vector registers
  __m256 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  const __m256 x_in = _mm256_set1_ps(1.0001f), y_in = _mm256_set1_ps(0.5f), t1 = _mm256_set1_ps(2.0f);
  const __m256i idx_in = _mm256_set1_epi32(3), addend_in = _mm256_set1_epi32(1 << 23);
  const __m256i words_in = _mm256_set1_epi64x(0x5555);
  __m256i acc64[16];
  for (int i = 0; i < 16; ++i) acc64[i] = _mm256_set1_epi64x(i);
  auto finish = [&] {
    __m256 s = acc[0];
    for (int i = 1; i < 16; ++i) s = _mm256_add_ps(s, acc[i]);
    __m256i w = acc64[0];
    for (int i = 1; i < 16; ++i) w = _mm256_add_epi64(w, acc64[i]);
    alignas(32) float f[8];
    alignas(32) long long l[4];
    _mm256_store_ps(f, s);
    _mm256_store_si256(reinterpret_cast<__m256i*>(l), w);
    sink = f[0] + static_cast<float>(l[0]);
  };
  const __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx_in, 28));
  double rate = 0;
  switch (m) {
    case mix::f32_fma:
      rate = products_per_second(
          [&](long n) {
            LOCAL_ACC(__m256, acc);
            for (long it = 0; it < n; ++it) {
              for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], x, y);
              FEWMUL_OPAQUE(x);
            }
            STORE_ACC(acc);
          },
          12.0 * 8);
      break;
    case mix::binary_lookup:  // two permutes and a blend select 16 entries
      rate = products_per_second(
          [&](long n) {
            LOCAL_ACC(__m256, acc);
            for (long it = 0; it < n; ++it) {
              for (int i = 0; i < 12; ++i) {
                a[i] = _mm256_add_ps(
                    a[i], _mm256_blendv_ps(_mm256_permutevar8x32_ps(x, idx), _mm256_permutevar8x32_ps(t1, idx), bit3));
                FEWMUL_OPAQUE(idx);
              }
              FEWMUL_OPAQUE(x);
            }
            STORE_ACC(acc);
          },
          12.0 * 8 * 4);
      break;
    case mix::ternary_lookup:  // four permutes and three blends select 32 entries
      rate = products_per_second(
          [&](long n) {
            LOCAL_ACC(__m256, acc);
            for (long it = 0; it < n; ++it) {
              for (int i = 0; i < 12; ++i) {
                const __m256 lo =
                    _mm256_blendv_ps(_mm256_permutevar8x32_ps(x, idx), _mm256_permutevar8x32_ps(t1, idx), bit3);
                const __m256 hi =
                    _mm256_blendv_ps(_mm256_permutevar8x32_ps(y, idx), _mm256_permutevar8x32_ps(x, idx), bit3);
                a[i] = _mm256_add_ps(a[i], _mm256_blendv_ps(lo, hi, t1));
                FEWMUL_OPAQUE(idx);
              }
              FEWMUL_OPAQUE(x);
            }
            STORE_ACC(acc);
          },
          12.0 * 8 * 3);
      break;
    case mix::shift_add:
      rate = products_per_second(
          [&](long n) {
            LOCAL_ACC(__m256, acc);
            for (long it = 0; it < n; ++it) {
              for (int i = 0; i < 12; ++i) {
                a[i] = _mm256_add_ps(a[i], _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), addend)));
                FEWMUL_OPAQUE(addend);
              }
              FEWMUL_OPAQUE(y);
            }
            STORE_ACC(acc);
          },
          12.0 * 8);
      break;
    case mix::xnor_popcount: {
      const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                             2, 2, 3, 2, 3, 3, 4);
      const __m256i low = _mm256_set1_epi8(0x0f);
      rate = products_per_second(
          [&](long n) {
            LOCAL_ACC(__m256i, acc64);
            for (long it = 0; it < n; ++it) {
              for (int i = 0; i < 12; ++i) {
                const __m256i v = _mm256_xor_si256(words, a[i]);
                const __m256i counts =
                    _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_and_si256(v, low)),
                                    _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
                a[i] = _mm256_add_epi64(a[i], _mm256_sad_epu8(counts, _mm256_setzero_si256()));
              }
              FEWMUL_OPAQUE(words);
            }
            STORE_ACC(acc64);
          },
          12.0 * 256);
      break;
    }
  }
  finish();
  return rate;
}
#pragma GCC pop_options
#endif

}  // namespace

double peak_products_per_second(mix m, fewmul::isa which) {
  static std::map<std::pair<int, int>, double> measured;
  const auto key = std::make_pair(static_cast<int>(m), static_cast<int>(which));
  if (auto it = measured.find(key); it != measured.end()) return it->second;
  double rate = 0;
#if defined(__x86_64__)
  if (fewmul::isa_supported(which)) {
    if (which == fewmul::isa::avx512bw || which == fewmul::isa::avx512vpopcntdq)
      rate = avx512_peak(m, which == fewmul::isa::avx512vpopcntdq);
    else if (which == fewmul::isa::avx2)
      rate = avx2_peak(m);
  }
#endif
  return measured[key] = rate;
}

}  // namespace fewmul_bench
