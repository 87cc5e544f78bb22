// y = a W^T for k_a-bit inputs a and binary or k_w-bit weights: pack a into bit planes (bit 1 = +1,
// the engine's convention), then one XNOR-popcount GEMM per pair of planes, summed with shifts (see
// kernels.hpp, "k-bit levels"). BNN (one plane each): sum_k a_k w_k = in - 2 * popcount(a XOR w); the
// integer sums are exact, so y equals the masked-add path bit for bit. k-bit: y = S / (L_a L_w) with
// the exact integer S, one division per output.
//
// Padding: a padded input is 0, which the plane packing reads as level u0 = level_of(0) (for one bit: +1),
// so the integer sum holds an extra (2 u0 - L_a) * w_int for each padded input, with w_int = sum_j 2^j (±1)_j
// the weight's odd integer. corrections_[p][o] sums those over the inputs pattern p pads, and run()
// subtracts them, so a padded convolution stays exact.
#include "layers/xnor_forward.hpp"

#include <algorithm>

#include "runtime/parallel_gemm.hpp"

namespace fewmul::detail {

void interleave_plane_words(const std::uint64_t* planes, std::size_t outputs, std::size_t words, std::size_t p0,
                            std::size_t p1, std::uint64_t* bt) noexcept {
  for (std::size_t p = p0; p < p1; ++p) {
    const std::size_t j = p / words, w = p % words;
    for (std::size_t o = 0; o < outputs; ++o) bt[p * outputs + o] = planes[(j * outputs + o) * words + w];
  }
}

void xnor_forward::set_weights(const std::uint64_t* planes, std::size_t count, std::size_t outputs, std::size_t words,
                               const step_context& ctx) {
  corrections_bits_ = -1;
  bt_.resize(count * words * outputs);
  parallel_rows(ctx.rt, count * words, 16, [&](std::size_t p0, std::size_t p1) {
    interleave_plane_words(planes, outputs, words, p0, p1, bt_.data());
  });
}

void xnor_forward::run(const xnor_product& p, const step_context& ctx) {
  const std::size_t in = p.inputs, out = p.outputs, rows = p.rows;
  const std::size_t words = kernels::words_for(in), plane = rows * words;
  const std::size_t a_planes = static_cast<std::size_t>(p.input_bits),
                    w_planes = static_cast<std::size_t>(p.weight_planes);
  const auto& k = ctx.kernels;
  input_planes_.resize(a_planes * plane);
  counts_.resize(rows * out);
  parallel_rows(ctx.rt, rows, 64, [&](std::size_t r0, std::size_t r1) {
    if (p.input_bits == 1)  // the SIMD sign packer: v >= 0 -> 1, as level_of for one bit
      k.pack_binary(p.a + r0 * in, r1 - r0, in, in, input_planes_.data() + r0 * words, words,
                    kernels::sample_mode::deterministic, 0);
    else
      kernels::pack_levels(p.a + r0 * in, r1 - r0, in, in, p.input_bits, input_planes_.data() + r0 * words, plane,
                           words);
  });
  const bool single = a_planes == 1 && w_planes == 1;
  if (!single) sums_.resize(rows * out);
  const bool padded = !row_pattern_.empty();
  if (padded && corrections_bits_ != p.input_bits) padding_corrections(p);
  const std::size_t patterns_period = std::max<std::size_t>(1, row_pattern_.size());
  const double levels = static_cast<double>((1 << p.input_bits) - 1) * static_cast<double>((1 << p.weight_planes) - 1);
  float* y = p.y;
  parallel_gemm(ctx.rt, rows, out, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    for (std::size_t pa = 0; pa < a_planes; ++pa)
      for (std::size_t pw = 0; pw < w_planes; ++pw) {
        k.gemm_xnor({.m = i1 - i0,
                     .n = j1 - j0,
                     .k_words = words,
                     .k_bits = static_cast<std::int32_t>(in),
                     .a = input_planes_.data() + pa * plane + i0 * words,
                     .lda = words,
                     .bt = bt_.data() + pw * words * out + j0,
                     .ldbt = out,
                     .c = counts_.data() + i0 * out + j0,
                     .ldc = out});
        if (single) break;
        const int shift = static_cast<int>(pa + pw);
        for (std::size_t i = i0; i < i1; ++i)
          for (std::size_t j = j0; j < j1; ++j) {
            const std::int64_t term = static_cast<std::int64_t>(counts_[i * out + j]) * (std::int64_t{1} << shift);
            sums_[i * out + j] = (pa == 0 && pw == 0 ? 0 : sums_[i * out + j]) + term;
          }
      }
    for (std::size_t i = i0; i < i1; ++i) {
      const std::int64_t* correction = padded ? corrections_.data() + row_pattern_[i % patterns_period] * out : nullptr;
      for (std::size_t j = j0; j < j1; ++j) {
        std::int64_t s = single ? counts_[i * out + j] : sums_[i * out + j];
        if (correction) s -= correction[j];
        y[i * out + j] = single ? static_cast<float>(s) : static_cast<float>(static_cast<double>(s) / levels);
      }
    }
  });
}

void xnor_forward::padding_corrections(const xnor_product& p) {
  const std::size_t out = p.outputs, words = kernels::words_for(p.inputs), plane = out * words;
  const std::int64_t zero_level =
      2 * static_cast<std::int64_t>(kernels::level_of(0.0f, p.input_bits)) - ((std::int64_t{1} << p.input_bits) - 1);
  corrections_.assign(padded_.size() * out, 0);
  for (std::size_t q = 0; q < padded_.size(); ++q)
    for (std::size_t o = 0; o < out; ++o) {
      std::int64_t total = 0;
      for (std::uint32_t k : padded_[q])
        for (int j = 0; j < p.weight_planes; ++j) {
          const bool plus = (p.planes[static_cast<std::size_t>(j) * plane + o * words + k / 64] >> (k % 64)) & 1u;
          total += (plus ? 1 : -1) * (std::int64_t{1} << j);
        }
      corrections_[q * out + o] = zero_level * total;
    }
  corrections_bits_ = p.input_bits;
}

}  // namespace fewmul::detail
