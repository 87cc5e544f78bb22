#include "layers/weight_kinds.hpp"

#include "fewmul/error.hpp"
#include "runtime/parallel_gemm.hpp"

namespace fewmul::detail {
namespace {

std::string qbp_suffix(const dense_options& o) {
  if (!o.qbp) return "";
  if (o.qbp_round == qbp_rounding::authors_dense) return "+qbp[authors' dense, unclipped]";
  if (o.qbp_round == qbp_rounding::authors_conv)
    return "+qbp[authors' conv, " + std::to_string(o.qbp_kmin) + "," + std::to_string(o.qbp_kmax + 1) + "]";
  return "+qbp[" + std::to_string(o.qbp_kmin) + "," + std::to_string(o.qbp_kmax) + "]";
}

std::string sampled_name(const char* kind, const dense_options& o) {
  return kind +
         std::string(o.training_sampling == kernels::sample_mode::stochastic ? "(stochastic)" : "(deterministic)") +
         qbp_suffix(o);
}

bool bit(const std::uint64_t* row, std::size_t c) { return (row[c / 64] >> (c % 64)) & 1u; }

// Binary and k-bit: weight u = sum_j 2^j bit_j, its level (one plane: ±1).
const char* decode_planes(const std::uint64_t* arrays, std::size_t array_words, std::size_t words, std::size_t row,
                          std::size_t cols, const dense_options& o, float* w) {
  const int bits = kind_traits(o.kind).arrays(o);
  for (std::size_t c = 0; c < cols; ++c) {
    std::uint32_t u = 0;
    for (int i = 0; i < bits; ++i)
      u |= static_cast<std::uint32_t>(bit(arrays + static_cast<std::size_t>(i) * array_words + row * words, c)) << i;
    w[c] = bits == 1 ? (u ? 1.0f : -1.0f) : kernels::level_value(u, bits);
  }
  return nullptr;
}

const char* decode_ternary(const std::uint64_t* arrays, std::size_t array_words, std::size_t words, std::size_t row,
                           std::size_t cols, const dense_options&, float* w) {
  const std::uint64_t* sign = arrays + row * words;
  const std::uint64_t* nonzero = arrays + array_words + row * words;
  for (std::size_t c = 0; c < cols; ++c) {
    const bool s = bit(sign, c), z = bit(nonzero, c);
    if (s && !z) return "ternary sign bit set where the weight is zero";
    w[c] = z ? (s ? 1.0f : -1.0f) : 0.0f;
  }
  return nullptr;
}

// The operands every block shares: A = rows [i0, i1) of a (row-major), C = block (i0, j0) of out.
template <class Params>
Params block_operands(const product_block& b) {
  Params p;
  p.m = b.i1 - b.i0;
  p.n = b.j1 - b.j0;
  p.k = b.depth;
  p.a = b.a + b.i0 * b.depth;
  p.a_rs = b.depth;
  p.a_cs = 1;
  p.c = b.out + b.i0 * b.width + b.j0;
  p.ldc = b.width;
  return p;
}

void multiply_f32(const kernels::kernel_table& k, const product_block& b) {
  auto p = block_operands<kernels::gemm_f32_params>(b);
  p.b = b.w.values_transposed ? b.w.values + b.j0 * b.depth : b.w.values + b.j0;
  p.ldb = b.w.values_transposed ? b.depth : b.width;
  p.b_transposed = b.w.values_transposed;
  run_packed_gemm(k, k.gemm_f32, p);
}

void multiply_ternary(const kernels::kernel_table& k, const product_block& b) {
  auto p = block_operands<kernels::gemm_ternary_params>(b);
  p.sign = b.w.bits + b.j0 / 64;
  p.nonzero = b.w.bits + b.w.array_words + b.j0 / 64;
  p.ldb = kernels::words_for(b.width);
  run_packed_gemm(k, k.gemm_ternary, p);
}

// Binary and k-bit: grouped-lookup adds per plane.
void multiply_planes(const kernels::kernel_table& k, const product_block& b) {
  binary_planes_block(k, b.planes, b.a, b.depth, b.w.bits, b.w.array_words, b.width, b.out, b.scratch, b.i0, b.i1, b.j0,
                      b.j1);
}

void check_k_bit(const dense_options& o) {
  if (o.weight_bits < 2 || o.weight_bits > 8)
    throw error("k-bit weights need 2 to 8 bits, not " + std::to_string(o.weight_bits));
  if (o.training_sampling != kernels::sample_mode::deterministic)
    throw error("k-bit weights are rounded deterministically");
}

// In weight_kind order (a model file stores the index).
static_assert(static_cast<int>(weight_kind::quantized) + 1 == weight_kind_count);
const weight_kind_traits kinds[weight_kind_count] = {
    {.name = [](const dense_options& o) { return "fp32" + qbp_suffix(o); },
     .sampled = false,
     .multiplies = true,
     .planes = false,
     .variable_bits = false,
     .arrays = [](const dense_options&) { return 0; },
     .stored_as = {nullptr, nullptr},
     .sample = nullptr,
     .decode_row = nullptr,
     .multiply = multiply_f32,
     .check = nullptr},
    {.name = [](const dense_options& o) { return sampled_name("binary", o); },
     .sampled = true,
     .multiplies = false,
     .planes = true,
     .variable_bits = false,
     .arrays = [](const dense_options&) { return 1; },
     .stored_as = {"packed sign bits", nullptr},
     .sample = [](const kernels::kernel_table& k,
                  const sample_args& s) { k.pack_binary(s.w, s.rows, s.cols, s.ld, s.arrays, s.words, s.mode, s.key); },
     .decode_row = decode_planes,
     .multiply = multiply_planes,
     .check = nullptr},
    {.name = [](const dense_options& o) { return sampled_name("ternary", o); },
     .sampled = true,
     .multiplies = false,
     .planes = false,
     .variable_bits = false,
     .arrays = [](const dense_options&) { return 2; },  // sign, nonzero
     .stored_as = {"packed sign bits", "packed nonzero bits"},
     .sample =
         [](const kernels::kernel_table& k, const sample_args& s) {
           k.pack_ternary(s.w, s.rows, s.cols, s.ld, s.arrays, s.arrays + s.array_words, s.words, s.mode, s.key);
         },
     .decode_row = decode_ternary,
     .multiply = multiply_ternary,
     .check = nullptr},
    {.name = [](const dense_options& o) { return std::to_string(o.weight_bits) + "-bit" + (o.qbp ? "+qbp" : ""); },
     .sampled = true,
     .multiplies = false,
     .planes = true,
     .variable_bits = true,
     .arrays = [](const dense_options& o) { return o.weight_bits; },
     .stored_as = {"packed weight planes", nullptr},
     // The nearest level (deterministic: k-bit weights are never sampled stochastically).
     .sample =
         [](const kernels::kernel_table&, const sample_args& s) {
           kernels::pack_levels(s.w, s.rows, s.cols, s.ld, s.options.weight_bits, s.arrays, s.array_words, s.words);
         },
     .decode_row = decode_planes,
     .multiply = multiply_planes,
     .check = check_k_bit},
};

}  // namespace

const weight_kind_traits& kind_traits(weight_kind kind) { return kinds[static_cast<std::size_t>(kind)]; }

void binary_planes_block(const kernels::kernel_table& k, int planes, const float* a, std::size_t depth,
                         const std::uint64_t* planes_t, std::size_t plane_words, std::size_t width, float* out,
                         float* scratch, std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
  const std::size_t ldb = kernels::words_for(width);
  for (int j = planes - 1; j >= 0; --j) {
    run_packed_gemm(k, k.gemm_binary,
                    {.m = i1 - i0,
                     .n = j1 - j0,
                     .k = depth,
                     .a = a + i0 * depth,
                     .a_rs = depth,
                     .a_cs = 1,
                     .bits = planes_t + static_cast<std::size_t>(j) * plane_words + j0 / 64,
                     .ldb = ldb,
                     .c = (j == planes - 1 ? out : scratch) + i0 * width + j0,
                     .ldc = width});
    if (j == planes - 1) continue;
    // Horner: out = 2 * out + plane_j, exact doublings.
    for (std::size_t i = i0; i < i1; ++i)
      for (std::size_t q = j0; q < j1; ++q) out[i * width + q] = 2.0f * out[i * width + q] + scratch[i * width + q];
  }
  if (planes == 1) return;
  const float inverse_levels = 1.0f / static_cast<float>((1 << planes) - 1);
  for (std::size_t i = i0; i < i1; ++i)
    for (std::size_t q = j0; q < j1; ++q) out[i * width + q] *= inverse_levels;
}

}  // namespace fewmul::detail
