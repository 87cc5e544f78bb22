#pragma once
// Shared by the kernel tests (test_<stem>.cpp): shapes around tile and block edges, the cache
// configurations under test, an aligned workspace, and one driver that runs a kernel and its scalar
// reference over every ISA, cache configuration and packed-GEMM shape.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "fewmul/kernels.hpp"
#include "test_support.hpp"

namespace fewmul_test {

inline const std::vector<std::size_t> column_sizes{1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 130, 200};

inline double bit_sign(const std::vector<std::uint64_t>& bits, std::size_t ldb, std::size_t r, std::size_t c) {
  return ((bits[r * ldb + c / 64] >> (c % 64)) & 1u) ? 1.0 : -1.0;
}

// The packed GEMMs under test: this CPU's cache sizes, and tiny ones whose K, M and N blocks are a few
// elements, so small shapes cross every block boundary (block - 1, block, block + 1).
inline const fewmul::kernels::cache_sizes tiny_caches{1024, 4096, 8192};
inline std::vector<fewmul::kernels::cache_sizes> caches_under_test() {
  return {fewmul::kernels::detect_cache_sizes(), tiny_caches};
}

// A 64-byte aligned workspace of the size the table asks for.
struct workspace {
  explicit workspace(std::size_t bytes) : storage(bytes / sizeof(float) + 16) {}
  void* get() { return reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(storage.data()) + 63) / 64 * 64); }
  std::vector<float> storage;
};

// Rows around the register tiles (4, 6, 8, 12 rows) and the tiny caches' M blocks, depths around the
// 4-groups and K blocks, columns around the panels (8, 16, 32) and words.
inline const std::vector<std::size_t> packed_rows{1, 2, 3, 4, 5, 7, 11, 12, 13, 23, 25, 37};
inline const std::vector<std::size_t> packed_depths{1, 3, 4, 5, 8, 9, 15, 16, 17, 31, 33, 130};
inline const std::vector<std::size_t> packed_columns{1, 7, 8, 9, 16, 17, 31, 32, 33, 63, 64, 65, 100, 130};

// One case of the packed-GEMM sweep: A (m x depth) row-major (the forward pass) or through a transposed
// view (a_rs = 1, as the weight gradient reads it).
struct packed_case {
  const fewmul::kernels::kernel_table& ref;
  const fewmul::kernels::kernel_table& k;
  fewmul::kernels::cache_sizes caches;
  void* workspace;
  std::size_t m, n, depth;
  std::uint32_t seed;
  bool transposed;
  std::size_t a_rs, a_cs;
};

// Runs f(packed_case) for every ISA, both cache configurations, every packed shape and both layouts of A.
template <class F>
void for_each_packed_case(F&& f) {
  const auto& ref = fewmul::kernels::reference_kernels();
  for (fewmul::isa which : isas_under_test()) {
    const auto& k = fewmul::kernels::kernels_for(which);
    CAPTURE(isa_label(which));
    for (const fewmul::kernels::cache_sizes& caches : caches_under_test()) {
      CAPTURE(caches.l1);
      workspace ws(k.workspace_bytes(caches));
      for (std::size_t m : packed_rows)
        for (std::size_t n : packed_columns)
          for (std::size_t depth : packed_depths) {
            CAPTURE(m);
            CAPTURE(n);
            CAPTURE(depth);
            const auto seed = static_cast<std::uint32_t>(m * 1000003 + n * 1009 + depth);
            for (bool transposed : {false, true}) {
              CAPTURE(transposed);
              f(packed_case{ref, k, caches, ws.get(), m, n, depth, seed, transposed, transposed ? 1 : depth,
                            transposed ? m : 1});
            }
          }
    }
  }
}

// Whether `simd` writes the same bits as `reference` into an m x n output p.c (prefilled with garbage).
template <class Params>
bool matches_reference(void (*reference)(const Params&) noexcept, void (*simd)(const Params&) noexcept, Params p) {
  std::vector<float> want(p.m * p.n), got(p.m * p.n, -7.0f);
  p.c = want.data();
  reference(p);
  p.c = got.data();
  simd(p);
  return same_bits(want, got);
}

// A row-major [depth][width] operand `wide` as an indirection buffer (an implicit im2col): `per_row` pointers per
// row, each to `segment` values of its own copy, except one segment in five, which points at `zeros` (the
// padding; those values of `wide` are set to 0 so that both forms hold the same operand). A kernel reading the
// wrong segment, or past one, reads different values.
template <class T>
struct indirect_operand {
  std::size_t per_row;
  std::vector<T> zeros, store;
  std::vector<const T*> rows;
  indirect_operand(std::vector<T>& wide, std::size_t depth, std::size_t width, std::size_t segment, std::uint32_t seed)
      : per_row((width + segment - 1) / segment),
        zeros(segment, T{0}),
        store(depth * per_row * segment, T{5}),
        rows(depth * per_row) {
    for (std::size_t q = 0; q < depth; ++q)
      for (std::size_t g = 0; g < per_row; ++g) {
        const bool padding = (q * 31 + g * 7 + seed) % 5 == 0;
        T* own = store.data() + (q * per_row + g) * segment;
        rows[q * per_row + g] = padding ? zeros.data() : own;
        for (std::size_t c = 0; c < segment && g * segment + c < width; ++c) {
          T& value = wide[q * width + g * segment + c];
          if (padding) value = T{0};
          own[c] = value;
        }
      }
  }
};

}  // namespace fewmul_test
