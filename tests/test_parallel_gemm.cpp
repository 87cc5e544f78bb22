// parallel_gemm's block grid: every output element in exactly one block, column blocks on 64-column
// boundaries (packed-bit operands are offset by whole words), and enough blocks for the threads.
#include <doctest/doctest.h>

#include <mutex>
#include <vector>

#include "fewmul/runtime.hpp"
#include "runtime/parallel_gemm.hpp"

using namespace fewmul;
using fewmul::detail::gemm_split;

namespace {

struct grid_check {
  std::vector<int> covered;
  std::size_t blocks = 0;
};

grid_check run_grid(const runtime& rt, std::size_t m, std::size_t n, gemm_split split) {
  grid_check g;
  g.covered.assign(m * n, 0);
  std::mutex lock;
  detail::parallel_gemm(
      rt, m, n,
      [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
        const std::lock_guard<std::mutex> hold(lock);
        ++g.blocks;
        CHECK(j0 % 64 == 0);
        CHECK(i0 < i1);
        CHECK(j0 < j1);
        for (std::size_t i = i0; i < i1; ++i)
          for (std::size_t j = j0; j < j1; ++j) ++g.covered[i * n + j];
      },
      split);
  return g;
}

}  // namespace

TEST_CASE("parallel_gemm covers every output once, split by columns or by rows") {
  for (int threads : {1, 2, 3, 16}) {
    const runtime rt(threads);
    for (gemm_split split : {gemm_split::columns, gemm_split::rows})
      for (std::size_t m : {1u, 15u, 16u, 17u, 200u, 1000u})
        for (std::size_t n : {1u, 10u, 63u, 64u, 65u, 784u, 1024u}) {
          CAPTURE(threads);
          CAPTURE(m);
          CAPTURE(n);
          CAPTURE(static_cast<int>(split));
          const auto g = run_grid(rt, m, n, split);
          std::size_t wrong = 0;
          for (int c : g.covered) wrong += c != 1;
          CHECK(wrong == 0);
        }
  }
}

TEST_CASE("parallel_gemm gives each thread a block of a batch-200 layer and splits rows evenly when asked") {
  for (int threads : {2, 16}) {
    CAPTURE(threads);
    const runtime rt(threads);
    CHECK(run_grid(rt, 200, 1024, gemm_split::columns).blocks >= static_cast<std::size_t>(threads));
    CHECK(run_grid(rt, 200, 1024, gemm_split::rows).blocks >= static_cast<std::size_t>(threads));
  }
  // Two threads, rows first: two blocks of whole rows (each task reads only its own rows of A).
  const runtime two(2);
  std::vector<std::size_t> row_starts, widths;
  std::mutex lock;
  detail::parallel_gemm(
      two, 200, 1024,
      [&](std::size_t i0, std::size_t, std::size_t j0, std::size_t j1) {
        const std::lock_guard<std::mutex> hold(lock);
        row_starts.push_back(i0);
        widths.push_back(j1 - j0);
      },
      gemm_split::rows);
  REQUIRE(row_starts.size() == 2);
  CHECK(widths[0] == 1024);
  CHECK(widths[1] == 1024);
  CHECK(row_starts[0] + row_starts[1] == 100);  // 0 and 100: equal halves
  // Sixteen threads, rows first: sixteen equal blocks (8 x 25 rows, 2 x 512 columns), one per thread.
  const runtime sixteen(16);
  std::vector<std::size_t> heights;
  widths.clear();
  detail::parallel_gemm(
      sixteen, 200, 1024,
      [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
        const std::lock_guard<std::mutex> hold(lock);
        heights.push_back(i1 - i0);
        widths.push_back(j1 - j0);
      },
      gemm_split::rows);
  CHECK(heights.size() == 16);
  for (std::size_t h : heights) CHECK(h == 25);
  for (std::size_t w : widths) CHECK(w == 512);
}
