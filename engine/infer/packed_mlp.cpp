#include "fewmul/packed_mlp.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "fewmul/error.hpp"
#include "layers/layer_io.hpp"
#include "runtime/parallel_gemm.hpp"
#include "layers/weight_core.hpp"

namespace fewmul {

using detail::parallel_gemm;
using detail::parallel_rows;

struct packed_mlp::stage {
  std::size_t in = 0, out = 0;
  int weight_bits = 1;                  // weight planes
  int input_bits = 0;                   // activation planes of the input; 0 for the first layer (bytes or floats)
  int output_bits = 0;                  // 0 for the last layer (float scores)
  std::vector<std::uint64_t> bt;        // [weight_bits][words(in)][out], for gemm_xnor
  std::vector<std::uint64_t> planes_t;  // first layer: [weight_bits][in][words(out)], for gemm_binary
  std::vector<std::int32_t> rowsum;     // first layer: [weight_bits][out], sum_k s_k of each ±1 plane
  std::vector<float> gamma, beta, mean, inv_std;
  // [out][2^output_bits - 1]: level >= l exactly when (S >= thresholds[l-1]) != descending; for
  // gamma < 0 (descending) "S <= t_l" is stored as "not S >= t_l + 1".
  std::vector<std::int32_t> thresholds;
  std::vector<std::uint8_t> descending;  // [out]
  double divisor = 1;                    // y(S) = S / divisor (hidden: L_a L_w; first layer bytes: 255 L_w)
  bool integer_output = true;            // y(S) = float(S): one plane each, as weight_core computes it

  detail::batch_norm_view bn() const {
    detail::batch_norm_view v;
    v.channels = out;
    v.positions = 1;
    v.gamma = gamma.data();
    v.beta = beta.data();
    v.mean = mean.data();
    v.inv_std = inv_std.data();
    return v;
  }
  float y_of(std::int64_t s) const {
    return integer_output ? static_cast<float>(s) : static_cast<float>(static_cast<double>(s) / divisor);
  }
  void fit_thresholds(std::int64_t smax);
  std::uint32_t level(std::size_t o, std::int32_t s) const {
    const std::size_t levels = (std::size_t{1} << output_bits) - 1;
    const std::int32_t* t = thresholds.data() + o * levels;
    const std::uint32_t flip = descending[o];
    std::uint32_t u = 0;
    for (std::size_t l = 0; l < levels; ++l) u += static_cast<std::uint32_t>(s >= t[l]) ^ flip;
    return u;
  }
};

packed_mlp::~packed_mlp() = default;
packed_mlp::packed_mlp(packed_mlp&&) noexcept = default;
packed_mlp& packed_mlp::operator=(packed_mlp&&) noexcept = default;

packed_mlp::packed_mlp(const network& net) {
  const auto& layers = net.layers();
  std::size_t i = 0;
  auto skip_dropout = [&] {
    while (i < layers.size() && detail::is_dropout(*layers[i])) ++i;
  };
  auto fail = [&](const std::string& what) -> void {
    const std::string where = i < layers.size() ? "layer " + std::to_string(i) + " (" + layers[i]->describe() + ")"
                                                : "the end of the network";
    throw error("packed inference needs " + what + " at " + where);
  };
  int input_bits = 0;
  while (true) {
    skip_dropout();
    const detail::weight_core* core = i < layers.size() ? detail::dense_weights(*layers[i]) : nullptr;
    if (core == nullptr || core->weight_planes() == 0) fail("a dense layer with binary or k-bit weights");
    stage st;
    st.in = core->inputs();
    st.out = core->outputs();
    st.weight_bits = core->weight_planes();
    st.input_bits = input_bits;
    const std::size_t words_in = kernels::words_for(st.in), words_out = kernels::words_for(st.out);
    const std::vector<std::uint64_t> planes = core->inference_planes();  // [wb][out][words_in]
    const std::size_t wb = static_cast<std::size_t>(st.weight_bits);
    st.bt.resize(wb * words_in * st.out);
    detail::interleave_plane_words(planes.data(), st.out, words_in, 0, wb * words_in, st.bt.data());
    if (input_bits == 0) {
      st.planes_t.resize(wb * st.in * words_out);
      st.rowsum.resize(wb * st.out);
      for (std::size_t j = 0; j < wb; ++j) {
        kernels::transpose_bits(planes.data() + j * st.out * words_in, st.out, st.in, words_in,
                                st.planes_t.data() + j * st.in * words_out, words_out);
        for (std::size_t o = 0; o < st.out; ++o) {
          std::int64_t ones = 0;
          for (std::size_t w = 0; w < words_in; ++w)
            ones += __builtin_popcountll(planes[(j * st.out + o) * words_in + w]);
          st.rowsum[j * st.out + o] = static_cast<std::int32_t>(2 * ones - static_cast<std::int64_t>(st.in));
        }
      }
    }
    const double weight_levels = static_cast<double>((1 << st.weight_bits) - 1);
    const double input_levels = input_bits == 0 ? 255.0 : static_cast<double>((1 << input_bits) - 1);
    st.divisor = weight_levels * input_levels;
    st.integer_output = input_bits == 1 && st.weight_bits == 1;
    // Integer sums lie within +-in * divisor; they are kept in 32 bits.
    const std::int64_t smax = static_cast<std::int64_t>(st.in) * static_cast<std::int64_t>(st.divisor);
    if (smax >= (std::int64_t{1} << 30)) fail("sums below 2^30 (fewer inputs or bits)");
    ++i;
    detail::batch_norm_view view;
    if (i >= layers.size() || !detail::batch_norm_inference_view(*layers[i], view) || view.positions != 1 ||
        view.channels != st.out)
      fail("a batch norm over the dense layer's outputs");
    st.gamma.assign(view.gamma, view.gamma + st.out);
    st.beta.assign(view.beta, view.beta + st.out);
    st.mean.assign(view.mean, view.mean + st.out);
    st.inv_std.assign(view.inv_std, view.inv_std + st.out);
    ++i;
    skip_dropout();
    if (i == layers.size()) {
      stages_.push_back(std::move(st));
      break;
    }
    st.output_bits = detail::activation_bits(*layers[i]);
    if (st.output_bits == 0) fail("a sign or k-bit activation");
    ++i;
    st.fit_thresholds(smax);
    input_bits = st.output_bits;
    stages_.push_back(std::move(st));
  }
}

// t_l for levels l = 1..L over S in [-smax, smax]; see the header for why a binary search is exact.
void packed_mlp::stage::fit_thresholds(std::int64_t smax) {
  stage& st = *this;
  const std::size_t levels = (std::size_t{1} << st.output_bits) - 1;
  st.thresholds.resize(st.out * levels);
  st.descending.assign(st.out, 0);
  const detail::batch_norm_view bn = st.bn();
  for (std::size_t o = 0; o < st.out; ++o) {
    auto level = [&](std::int64_t s) { return kernels::level_of(bn.apply(o, st.y_of(s)), st.output_bits); };
    const float g = st.gamma[o];
    st.descending[o] = g < 0.0f;
    for (std::size_t l = 1; l <= levels; ++l) {
      std::int64_t t = 0;
      if (g == 0.0f) {  // constant level
        t = level(0) >= l ? -smax : smax + 1;
      } else if (g > 0.0f) {                     // smallest S with level(S) >= l
        std::int64_t lo = -smax, hi = smax + 1;  // level(smax + 1) counts as >= l: "never"
        while (lo < hi) {
          const std::int64_t mid = lo + (hi - lo) / 2;
          if (mid > smax || level(mid) >= l)
            hi = mid;
          else
            lo = mid + 1;
        }
        t = lo;
      } else {                                   // largest S with level(S) >= l
        std::int64_t lo = -smax - 1, hi = smax;  // level(-smax - 1) counts as >= l: "never"
        while (lo < hi) {
          const std::int64_t mid = hi - (hi - lo) / 2;
          if (mid < -smax || level(mid) >= l)
            lo = mid;
          else
            hi = mid - 1;
        }
        t = lo + 1;  // S <= lo  <=>  not S >= lo + 1
      }
      st.thresholds[o * levels + l - 1] = static_cast<std::int32_t>(t);
    }
  }
}

std::size_t packed_mlp::input_size() const { return stages_.front().in; }
std::size_t packed_mlp::output_size() const { return stages_.back().out; }

std::string packed_mlp::describe() const {
  std::string s = std::to_string(input_size());
  for (const stage& st : stages_) {
    s += " -(" + std::string(st.input_bits == 0 ? "bytes/floats, " : "") + std::to_string(st.weight_bits) + "b w)-> " +
         std::to_string(st.out);
    if (st.output_bits > 0) s += " [" + std::to_string(st.output_bits) + "b]";
  }
  return s;
}

std::size_t packed_mlp::bytes() const {
  std::size_t total = 0;
  for (const stage& st : stages_)
    total += 8 * (st.bt.size() + st.planes_t.size() + st.rowsum.size() + st.thresholds.size()) + st.descending.size() +
             4 * (st.gamma.size() + st.beta.size() + st.mean.size() + st.inv_std.size());
  return total;
}

// Writes the block's outputs: float scores (last layer) or the levels' bit planes into planes_out_.
// `sums` holds integer sums S, or `values` floats y (first layer on floats).
void packed_mlp::finish(const stage& st, std::size_t rows, std::size_t i0, std::size_t i1, std::size_t j0,
                        std::size_t j1, const std::int32_t* sums, const float* values, float* scores) {
  const detail::batch_norm_view bn = st.bn();
  if (st.output_bits == 0) {
    for (std::size_t i = i0; i < i1; ++i)
      for (std::size_t j = j0; j < j1; ++j) {
        const float y = values ? values[i * st.out + j] : st.y_of(sums[i * st.out + j]);
        scores[i * st.out + j] = bn.apply(j, y);
      }
    return;
  }
  const std::size_t words = kernels::words_for(st.out), plane = rows * words;
  if (sums && st.output_bits == 1) {  // BNN: one compare per output
    for (std::size_t i = i0; i < i1; ++i)
      for (std::size_t w = j0 / 64; w * 64 < j1; ++w) {
        std::uint64_t word = 0;
        for (std::size_t j = w * 64; j < std::min(j1, w * 64 + 64); ++j)
          word |= static_cast<std::uint64_t>((sums[i * st.out + j] >= st.thresholds[j]) ^ st.descending[j]) << (j % 64);
        planes_out_[i * words + w] = word;
      }
    return;
  }
  for (std::size_t i = i0; i < i1; ++i)
    for (std::size_t w = j0 / 64; w * 64 < j1; ++w) {  // blocks start at multiples of 64: whole words
      std::uint64_t word[8] = {};
      for (std::size_t j = w * 64; j < std::min(j1, w * 64 + 64); ++j) {
        const std::uint32_t u = values ? kernels::level_of(bn.apply(j, values[i * st.out + j]), st.output_bits)
                                       : st.level(j, sums[i * st.out + j]);
        for (int b = 0; b < st.output_bits; ++b) word[b] |= static_cast<std::uint64_t>((u >> b) & 1u) << (j % 64);
      }
      for (int b = 0; b < st.output_bits; ++b)
        planes_out_[static_cast<std::size_t>(b) * plane + i * words + w] = word[b];
    }
}

void packed_mlp::run(const float* x, std::size_t rows, float* scores, const runtime& rt) {
  if (rows == 0) return;
  run_first(stages_.front(), x, rows, scores, rt);
  for (std::size_t s = 1; s < stages_.size(); ++s) {
    std::swap(planes_in_, planes_out_);
    run_hidden(stages_[s], rows, scores, rt);
  }
}

void packed_mlp::run_first(const stage& st, const float* x, std::size_t rows, float* scores, const runtime& rt) {
  const auto& k = kernels::active_kernels();
  const std::size_t words = kernels::words_for(st.in), plane = rows * words, n = rows * st.in;
  // finish() writes every word of every output plane (blocks start at multiples of 64 columns).
  if (st.output_bits > 0)
    planes_out_.resize(static_cast<std::size_t>(st.output_bits) * rows * kernels::words_for(st.out));
  counts_.resize(rows * st.out);
  sums_.resize(rows * st.out);
  // Bytes when every input is p/255 for an integer p in [0, 255].
  used_bytes_ = true;
  for (std::size_t e = 0; e < n && used_bytes_; ++e) {
    const float scaled = x[e] * 255.0f;
    const float p = std::nearbyint(scaled);
    used_bytes_ = p >= 0.0f && p <= 255.0f && std::fabs(scaled - p) <= 1e-3f;
  }
  const std::size_t wb = static_cast<std::size_t>(st.weight_bits);
  if (used_bytes_) {
    planes_in_.resize(8 * plane);
    parallel_rows(rt, rows, 64, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r)
        for (std::size_t w = 0; w < words; ++w) {
          std::uint64_t word[8] = {};
          for (std::size_t c = w * 64; c < std::min(st.in, w * 64 + 64); ++c) {
            const auto p = static_cast<std::uint32_t>(std::nearbyint(x[r * st.in + c] * 255.0f));
            for (std::size_t b = 0; b < 8; ++b) word[b] |= static_cast<std::uint64_t>((p >> b) & 1u) << (c % 64);
          }
          for (std::size_t b = 0; b < 8; ++b) planes_in_[b * plane + r * words + w] = word[b];
        }
    });
    // sum_k w_k p_k = sum_j 2^j sum_i 2^i (xnor_dot(plane_j, b_i) + rowsum_j) / 2 (header comment).
    parallel_gemm(rt, rows, st.out, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
      for (std::size_t i = i0; i < i1; ++i)
        std::fill(sums_.data() + i * st.out + j0, sums_.data() + i * st.out + j1, 0);
      for (std::size_t b = 0; b < 8; ++b)
        for (std::size_t pw = 0; pw < wb; ++pw) {
          k.gemm_xnor({.m = i1 - i0,
                       .n = j1 - j0,
                       .k_words = words,
                       .k_bits = static_cast<std::int32_t>(st.in),
                       .a = planes_in_.data() + b * plane + i0 * words,
                       .lda = words,
                       .bt = st.bt.data() + pw * words * st.out + j0,
                       .ldbt = st.out,
                       .c = counts_.data() + i0 * st.out + j0,
                       .ldc = st.out});
          const int shift = static_cast<int>(b + pw) - 1;  // (c + rowsum) is even: halve within the shift
          for (std::size_t i = i0; i < i1; ++i) {
            const std::int32_t* c = counts_.data() + i * st.out;
            std::int32_t* sum = sums_.data() + i * st.out;
            const std::int32_t* rowsum = st.rowsum.data() + pw * st.out;
            if (shift < 0)
              for (std::size_t j = j0; j < j1; ++j) sum[j] += (c[j] + rowsum[j]) / 2;
            else
              for (std::size_t j = j0; j < j1; ++j) sum[j] += (c[j] + rowsum[j]) * (1 << shift);
          }
        }
      finish(st, rows, i0, i1, j0, j1, sums_.data(), nullptr, scores);
    });
    return;
  }
  // Floats: the layers' masked-add path (binary_planes_block), so the same bits as network::forward.
  const std::size_t words_out = kernels::words_for(st.out);
  floats_.resize(rows * st.out);
  if (wb > 1) plane_floats_.resize(rows * st.out);
  parallel_gemm(rt, rows, st.out, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    detail::binary_planes_block(k, st.weight_bits, x, st.in, st.planes_t.data(), st.in * words_out, st.out,
                                floats_.data(), plane_floats_.data(), i0, i1, j0, j1);
    finish(st, rows, i0, i1, j0, j1, nullptr, floats_.data(), scores);
  });
}

void packed_mlp::run_hidden(const stage& st, std::size_t rows, float* scores, const runtime& rt) {
  const auto& k = kernels::active_kernels();
  const std::size_t words = kernels::words_for(st.in), plane = rows * words;
  const std::size_t ab = static_cast<std::size_t>(st.input_bits), wb = static_cast<std::size_t>(st.weight_bits);
  if (st.output_bits > 0)
    planes_out_.resize(static_cast<std::size_t>(st.output_bits) * rows * kernels::words_for(st.out));
  counts_.resize(rows * st.out);
  sums_.resize(rows * st.out);
  parallel_gemm(rt, rows, st.out, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
    if (ab == 1 && wb == 1) {  // BNN: the counts are the sums
      k.gemm_xnor({.m = i1 - i0,
                   .n = j1 - j0,
                   .k_words = words,
                   .k_bits = static_cast<std::int32_t>(st.in),
                   .a = planes_in_.data() + i0 * words,
                   .lda = words,
                   .bt = st.bt.data() + j0,
                   .ldbt = st.out,
                   .c = sums_.data() + i0 * st.out + j0,
                   .ldc = st.out});
      finish(st, rows, i0, i1, j0, j1, sums_.data(), nullptr, scores);
      return;
    }
    for (std::size_t i = i0; i < i1; ++i) std::fill(sums_.data() + i * st.out + j0, sums_.data() + i * st.out + j1, 0);
    for (std::size_t pa = 0; pa < ab; ++pa)
      for (std::size_t pw = 0; pw < wb; ++pw) {
        k.gemm_xnor({.m = i1 - i0,
                     .n = j1 - j0,
                     .k_words = words,
                     .k_bits = static_cast<std::int32_t>(st.in),
                     .a = planes_in_.data() + pa * plane + i0 * words,
                     .lda = words,
                     .bt = st.bt.data() + pw * words * st.out + j0,
                     .ldbt = st.out,
                     .c = counts_.data() + i0 * st.out + j0,
                     .ldc = st.out});
        const std::int32_t scale = std::int32_t{1} << (pa + pw);
        for (std::size_t i = i0; i < i1; ++i)
          for (std::size_t j = j0; j < j1; ++j) sums_[i * st.out + j] += counts_[i * st.out + j] * scale;
      }
    finish(st, rows, i0, i1, j0, j1, sums_.data(), nullptr, scores);
  });
}

}  // namespace fewmul
