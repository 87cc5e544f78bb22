// packed_network: see include/fewmul/packed_network.hpp for the layout, the padding correction, the
// thresholds and why pooling integer sums is exact.
#include "fewmul/packed_network.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>

#include "fewmul/error.hpp"
#include "layers/layer_io.hpp"
#include "layers/weight_core.hpp"
#include "runtime/parallel_gemm.hpp"

namespace fewmul {

using detail::parallel_gemm;
using detail::parallel_rows;

namespace {
// Scratch of one slab of examples (integer sums, im2col rows): small enough to stay in the L2/L3 caches.
constexpr std::size_t slab_budget = std::size_t{1} << 21;

// 64 bytes of 0/1 into one word, byte j to bit j: eight bytes at a time, where the product with
// 0x0102040810204080 gathers bit 0 of byte i into bit 56 + i (no carries: every partial product lands on
// its own bit).
std::uint64_t pack_bytes(const std::uint8_t* bits) {
  std::uint64_t word = 0;
  for (std::size_t q = 0; q < 8; ++q) {
    std::uint64_t eight;
    std::memcpy(&eight, bits + 8 * q, 8);
    word |= ((eight * 0x0102040810204080ull) >> 56) << (8 * q);
  }
  return word;
}
}  // namespace

struct packed_network::stage {
  bool conv = false;
  std::size_t height = 1, width = 1, channels = 0;  // input map (a dense layer: 1 x 1 x inputs, or a flattened map)
  std::size_t kernel = 1;
  bool same_padding = false;
  std::size_t out_height = 1, out_width = 1;      // the weight layer's output map
  bool pool = false;                              // 2x2 max-pooling of the sums
  std::size_t final_height = 1, final_width = 1;  // after pooling
  std::size_t out = 0;                            // output channels
  // The K of the GEMM: `taps` groups of `tap_bits` bits, each group padded to `tap_words` words.
  // Convolution: the kernel's taps over the input channels; dense after a map: the map's positions.
  std::size_t taps = 1, tap_bits = 0, tap_words = 0;
  int weight_bits = 1;
  int input_bits = 0;   // activation planes of the input; 0 for the first layer (bytes or floats)
  int output_bits = 0;  // 0 for the last layer (float scores)
  std::string layer_name;
  std::vector<std::uint64_t> bt;           // [weight_bits][k_words][out], for gemm_xnor
  std::vector<std::uint64_t> planes_t;     // first layer: [weight_bits][k_bits][words(out)], for gemm_binary
  std::vector<std::int32_t> rowsum;        // first layer: [weight_bits][out], sum_k s_k of each ±1 plane
  std::vector<std::uint32_t> row_pattern;  // padded convolution: border class of each output position
  std::vector<std::int32_t> corrections;   // [class][out]: L_a * sum of w_int over the padded taps
  std::vector<float> gamma, beta, mean, inv_std;
  // [out][2^output_bits - 1]: level >= l exactly when (S >= thresholds[l-1]) != descending; for
  // gamma < 0 (descending) "S <= t_l" is stored as "not S >= t_l + 1".
  std::vector<std::int32_t> thresholds;
  std::vector<std::uint8_t> descending;  // [out]
  // First layer on floats: the same per channel over y itself, level >= l exactly when y >= t (y <= t for
  // gamma < 0); NaN never passes, as level_of(NaN) = 0.
  // One bit (sign): -t for gamma < 0, compared with -y, so that every channel is one ">=".
  std::vector<float> float_thresholds;  // [out][2^output_bits - 1]
  // One bit on integer sums: the level is (S ^ sign_flip) >= sign_thresholds, with sign_flip = -1 and
  // the threshold -t for gamma < 0 (~S = -S - 1 >= -t exactly when S < t, i.e. not S >= t).
  std::vector<std::int32_t> sign_flip, sign_thresholds;  // [out]
  double divisor = 1;          // y(S) = S / divisor (hidden: L_a L_w; first layer bytes: 255 L_w)
  bool integer_output = true;  // y(S) = float(S): one plane each, as weight_core computes it

  std::size_t k_words() const { return taps * tap_words; }
  std::size_t k_bits() const { return taps * tap_bits; }
  std::size_t in_positions() const { return height * width; }
  std::size_t out_positions() const { return out_height * out_width; }
  std::size_t final_positions() const { return final_height * final_width; }

  detail::batch_norm_view bn() const {
    detail::batch_norm_view v;
    v.channels = out;
    v.positions = final_positions();
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
  void fit_float_thresholds();
  std::uint32_t level(std::size_t o, std::int32_t s) const {
    const std::size_t levels = (std::size_t{1} << output_bits) - 1;
    const std::int32_t* t = thresholds.data() + o * levels;
    const std::uint32_t flip = descending[o];
    std::uint32_t u = 0;
    for (std::size_t l = 0; l < levels; ++l) u += static_cast<std::uint32_t>(s >= t[l]) ^ flip;
    return u;
  }
  void compile_weights(const detail::weight_core& core, bool first, const std::vector<std::uint32_t>& pad_rows,
                       const std::vector<std::vector<std::uint32_t>>& pad_taps);

  // Writes output row r (an example's position after pooling) for channels [j0, j1), j0 a multiple of
  // 64: float scores (last layer) or the levels' bit planes. value(j) is an integer sum S or, on the
  // first layer's float path, the float y.
  template <class Value>
  void emit(std::size_t r, std::size_t plane, std::size_t j0, std::size_t j1, Value&& value, std::uint64_t* planes_out,
            float* scores) const {
    constexpr bool floats = std::is_same_v<std::decay_t<decltype(value(std::size_t{0}))>, float>;
    const detail::batch_norm_view view = bn();
    if (output_bits == 0) {
      for (std::size_t j = j0; j < j1; ++j) {
        if constexpr (floats)
          scores[r * out + j] = view.apply(j, value(j));
        else
          scores[r * out + j] = view.apply(j, y_of(value(j)));
      }
      return;
    }
    const std::size_t words = kernels::words_for(out);
    for (std::size_t w = j0 / 64; w * 64 < j1; ++w) {
      const std::size_t end = std::min(j1, w * 64 + 64);
      if (output_bits == 1) {  // BNN: one compare per output, as bytes (vectorizable), then packed
        alignas(8) std::uint8_t bits[64] = {};
        const std::size_t base = w * 64;
        if constexpr (floats) {
          for (std::size_t j = base; j < end; ++j) {
            const float v = value(j);
            bits[j - base] = (descending[j] ? -v : v) >= float_thresholds[j];
          }
        } else {
          for (std::size_t j = base; j < end; ++j) bits[j - base] = (value(j) ^ sign_flip[j]) >= sign_thresholds[j];
        }
        planes_out[r * words + w] = pack_bytes(bits);
        continue;
      }
      std::uint64_t word[8] = {};
      for (std::size_t j = w * 64; j < end; ++j) {
        std::uint32_t u = 0;
        if constexpr (floats) {
          const std::size_t levels = (std::size_t{1} << output_bits) - 1;
          const float v = value(j), *t = float_thresholds.data() + j * levels;
          for (std::size_t l = 0; l < levels; ++l) u += descending[j] ? v <= t[l] : v >= t[l];
        } else {
          u = level(j, value(j));
        }
        for (int b = 0; b < output_bits; ++b) word[b] |= static_cast<std::uint64_t>((u >> b) & 1u) << (j % 64);
      }
      for (int b = 0; b < output_bits; ++b) planes_out[static_cast<std::size_t>(b) * plane + r * words + w] = word[b];
    }
  }
};

packed_network::~packed_network() = default;
packed_network::packed_network(packed_network&&) noexcept = default;
packed_network& packed_network::operator=(packed_network&&) noexcept = default;

// The layer's planes [wb][out][words(K)], flat input k = tap * tap_bits + c, rearranged per tap
// ([wb][out][taps][tap_words]) and word-interleaved for gemm_xnor; the first layer also keeps the
// transposes (float path) and the ±1 row sums (bytes path); a padded convolution on packed inputs the
// share of its padded taps.
void packed_network::stage::compile_weights(const detail::weight_core& core, bool first,
                                            const std::vector<std::uint32_t>& pad_rows,
                                            const std::vector<std::vector<std::uint32_t>>& pad_taps) {
  const std::size_t in = core.inputs(), words_in = kernels::words_for(in), kw = k_words();
  const std::size_t wb = static_cast<std::size_t>(weight_bits);
  // A loaded model's planes are read in place (no second copy of the weights while compiling).
  std::vector<std::uint64_t> copy;
  const std::uint64_t* planes = core.resident_planes();
  if (planes == nullptr) {
    copy = core.inference_planes();
    planes = copy.data();
  }
  auto weight_bit = [&](std::size_t j, std::size_t o, std::size_t k) {
    return (planes[(j * out + o) * words_in + k / 64] >> (k % 64)) & 1u;
  };
  bt.resize(wb * kw * out);
  if (taps == 1 || tap_bits % 64 == 0) {  // the layer's own word layout
    detail::interleave_plane_words(planes, out, kw, 0, wb * kw, bt.data());
  } else {
    std::vector<std::uint64_t> row(kw);
    for (std::size_t j = 0; j < wb; ++j)
      for (std::size_t o = 0; o < out; ++o) {
        std::fill(row.begin(), row.end(), 0);
        for (std::size_t t = 0; t < taps; ++t)
          for (std::size_t c = 0; c < tap_bits; ++c)
            row[t * tap_words + c / 64] |= static_cast<std::uint64_t>(weight_bit(j, o, t * tap_bits + c)) << (c % 64);
        for (std::size_t w = 0; w < kw; ++w) bt[(j * kw + w) * out + o] = row[w];
      }
  }
  if (first) {
    const std::size_t words_out = kernels::words_for(out);
    planes_t.resize(wb * in * words_out);
    rowsum.resize(wb * out);
    for (std::size_t j = 0; j < wb; ++j) {
      kernels::transpose_bits(planes + j * out * words_in, out, in, words_in, planes_t.data() + j * in * words_out,
                              words_out);
      for (std::size_t o = 0; o < out; ++o) {
        std::int64_t ones = 0;
        for (std::size_t w = 0; w < words_in; ++w) ones += __builtin_popcountll(planes[(j * out + o) * words_in + w]);
        rowsum[j * out + o] = static_cast<std::int32_t>(2 * ones - static_cast<std::int64_t>(in));
      }
    }
  }
  if (pad_taps.empty()) return;
  row_pattern = pad_rows;
  const std::int64_t input_levels = (std::int64_t{1} << input_bits) - 1;
  corrections.assign(pad_taps.size() * out, 0);
  for (std::size_t p = 0; p < pad_taps.size(); ++p)
    for (std::size_t o = 0; o < out; ++o) {
      std::int64_t total = 0;  // sum of w_int over the padded inputs
      for (std::uint32_t t : pad_taps[p])
        for (std::size_t c = 0; c < tap_bits; ++c)
          for (std::size_t j = 0; j < wb; ++j)
            total += (weight_bit(j, o, t * tap_bits + c) ? 1 : -1) * (std::int64_t{1} << j);
      corrections[p * out + o] = static_cast<std::int32_t>(input_levels * total);
    }
}

packed_network::packed_network(const network& net) {
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
  bool after_map = false;  // the previous block was a convolution
  std::size_t map_positions = 0, map_channels = 0;
  while (true) {
    skip_dropout();
    stage st;
    conv_shape shape;
    const detail::weight_core* core = nullptr;
    if (i < layers.size()) {
      core = detail::dense_weights(*layers[i]);
      if (core == nullptr) {
        core = detail::conv_weights(*layers[i], shape);
        st.conv = core != nullptr;
      }
    }
    if (core == nullptr || core->weight_planes() == 0)
      fail("a dense or convolution layer with binary or k-bit weights");
    if (st.conv && !stages_.empty() && !after_map) fail("convolutions before the dense layers");
    st.layer_name = layers[i]->describe();
    st.out = core->outputs();
    st.weight_bits = core->weight_planes();
    st.input_bits = input_bits;
    const bool first = stages_.empty();
    std::vector<std::uint32_t> pad_rows;
    std::vector<std::vector<std::uint32_t>> pad_taps;
    if (st.conv) {
      st.height = shape.height;
      st.width = shape.width;
      st.channels = shape.in_channels;
      st.kernel = shape.kernel;
      st.same_padding = shape.same_padding;
      st.out_height = st.final_height = shape.out_height();
      st.out_width = st.final_width = shape.out_width();
      st.taps = shape.kernel * shape.kernel;
      st.tap_bits = shape.in_channels;
      if (!first && shape.same_padding && shape.kernel > 1) {
        detail::conv_padding_patterns(shape, pad_rows, pad_taps);
        if (pad_taps.size() == 1 && pad_taps[0].empty()) pad_taps.clear();  // nothing is ever padded
      }
    } else if (after_map) {
      st.channels = core->inputs();
      st.taps = map_positions;
      st.tap_bits = map_channels;
    } else {
      st.channels = st.tap_bits = core->inputs();
    }
    st.tap_words = kernels::words_for(st.tap_bits);
    const double weight_levels = static_cast<double>((1 << st.weight_bits) - 1);
    const double input_levels = input_bits == 0 ? 255.0 : static_cast<double>((1 << input_bits) - 1);
    st.divisor = weight_levels * input_levels;
    st.integer_output = input_bits == 1 && st.weight_bits == 1;
    // Integer sums lie within +-K * divisor; they are kept in 32 bits.
    const std::int64_t smax = static_cast<std::int64_t>(st.k_bits()) * static_cast<std::int64_t>(st.divisor);
    if (smax >= (std::int64_t{1} << 30)) fail("sums below 2^30 (fewer inputs or bits)");
    st.compile_weights(*core, first, pad_rows, pad_taps);
    ++i;
    std::size_t ph = 0, pw = 0, pc = 0;
    if (st.conv && i < layers.size() && detail::max_pool_shape(*layers[i], ph, pw, pc)) {
      st.pool = true;
      st.final_height = st.out_height / 2;
      st.final_width = st.out_width / 2;
      ++i;
    }
    detail::batch_norm_view view;
    if (i >= layers.size() || !detail::batch_norm_inference_view(*layers[i], view) || view.channels != st.out ||
        view.positions != st.final_positions())
      fail("a batch norm over the weight layer's output channels");
    st.gamma.assign(view.gamma, view.gamma + st.out);
    st.beta.assign(view.beta, view.beta + st.out);
    st.mean.assign(view.mean, view.mean + st.out);
    st.inv_std.assign(view.inv_std, view.inv_std + st.out);
    ++i;
    skip_dropout();
    if (i == layers.size()) {
      if (st.conv) fail("a dense layer last");
      stages_.push_back(std::move(st));
      break;
    }
    st.output_bits = detail::activation_bits(*layers[i]);
    if (st.output_bits == 0) fail("a sign or k-bit activation");
    ++i;
    st.fit_thresholds(smax);
    if (first) st.fit_float_thresholds();
    input_bits = st.output_bits;
    after_map = st.conv;
    map_positions = st.final_positions();
    map_channels = st.out;
    stages_.push_back(std::move(st));
  }
}

// t_l for levels l = 1..L over S in [-smax, smax]; see the header for why a binary search is exact.
void packed_network::stage::fit_thresholds(std::int64_t smax) {
  const std::size_t levels = (std::size_t{1} << output_bits) - 1;
  thresholds.resize(out * levels);
  descending.assign(out, 0);
  const detail::batch_norm_view view = bn();
  for (std::size_t o = 0; o < out; ++o) {
    auto level_at = [&](std::int64_t s) { return kernels::level_of(view.apply(o, y_of(s)), output_bits); };
    const float g = gamma[o];
    descending[o] = g < 0.0f;
    for (std::size_t l = 1; l <= levels; ++l) {
      std::int64_t t = 0;
      if (g == 0.0f) {  // constant level
        t = level_at(0) >= l ? -smax : smax + 1;
      } else if (g > 0.0f) {                     // smallest S with level(S) >= l
        std::int64_t lo = -smax, hi = smax + 1;  // level(smax + 1) counts as >= l: "never"
        while (lo < hi) {
          const std::int64_t mid = lo + (hi - lo) / 2;
          if (mid > smax || level_at(mid) >= l)
            hi = mid;
          else
            lo = mid + 1;
        }
        t = lo;
      } else {                                   // largest S with level(S) >= l
        std::int64_t lo = -smax - 1, hi = smax;  // level(-smax - 1) counts as >= l: "never"
        while (lo < hi) {
          const std::int64_t mid = hi - (hi - lo) / 2;
          if (mid < -smax || level_at(mid) >= l)
            lo = mid;
          else
            hi = mid - 1;
        }
        t = lo + 1;  // S <= lo  <=>  not S >= lo + 1
      }
      thresholds[o * levels + l - 1] = static_cast<std::int32_t>(t);
    }
  }
  if (output_bits != 1) return;
  sign_flip.resize(out);
  sign_thresholds.resize(out);
  for (std::size_t o = 0; o < out; ++o) {
    sign_flip[o] = descending[o] ? -1 : 0;
    sign_thresholds[o] = descending[o] ? -thresholds[o] : thresholds[o];
  }
}

// Float thresholds of the first layer's float path. level_of(bn(y)) is monotone in y over all floats for
// gamma != 0 (each float operation is), so a binary search over the floats in their order (the integers
// key(y) below) finds exactly where it steps. gamma = 0 gives the constant level of finite y.
void packed_network::stage::fit_float_thresholds() {
  const std::size_t levels = (std::size_t{1} << output_bits) - 1;
  float_thresholds.resize(out * levels);
  const detail::batch_norm_view view = bn();
  auto key = [](float f) {
    const auto u = std::bit_cast<std::uint32_t>(f);
    return (u >> 31) ? ~u : (u | 0x80000000u);
  };
  auto value_of = [](std::uint32_t k) { return std::bit_cast<float>((k >> 31) ? (k & 0x7fffffffu) : ~k); };
  const float never = std::numeric_limits<float>::quiet_NaN(), infinity = std::numeric_limits<float>::infinity();
  const std::uint32_t lowest = key(-infinity), highest = key(infinity);
  for (std::size_t o = 0; o < out; ++o) {
    auto level_at = [&](std::uint32_t k) { return kernels::level_of(view.apply(o, value_of(k)), output_bits); };
    const float g = gamma[o];
    for (std::size_t l = 1; l <= levels; ++l) {
      float t = never;
      if (g == 0.0f) {
        t = kernels::level_of(view.apply(o, 0.0f), output_bits) >= l ? -std::numeric_limits<float>::max() : never;
      } else if (g > 0.0f) {  // smallest y with level >= l
        if (level_at(highest) >= l) {
          std::uint32_t lo = lowest, hi = highest;
          while (lo < hi) {
            const std::uint32_t mid = lo + (hi - lo) / 2;
            if (level_at(mid) >= l)
              hi = mid;
            else
              lo = mid + 1;
          }
          t = value_of(lo);
        }
      } else if (level_at(lowest) >= l) {  // largest y with level >= l
        std::uint32_t lo = lowest, hi = highest;
        while (lo < hi) {
          const std::uint32_t mid = hi - (hi - lo) / 2;
          if (level_at(mid) >= l)
            lo = mid;
          else
            hi = mid - 1;
        }
        t = value_of(lo);
      }
      float_thresholds[o * levels + l - 1] = output_bits == 1 && g < 0.0f ? -t : t;
    }
  }
}

std::size_t packed_network::input_size() const {
  const stage& st = stages_.front();
  return st.in_positions() * st.channels;
}
std::size_t packed_network::output_size() const { return stages_.back().out; }

std::string packed_network::describe() const {
  std::string s;
  for (const stage& st : stages_) {
    if (!s.empty()) s += " | ";
    s += st.layer_name + " [" +
         (st.input_bits == 0 ? std::string("bytes/floats") : std::to_string(st.input_bits) + "b") + " x " +
         std::to_string(st.weight_bits) + "b w" + (st.pool ? ", pooled sums" : "") + " -> " +
         (st.output_bits > 0 ? std::to_string(st.output_bits) + "b thresholds]" : "scores]");
  }
  return s;
}

std::size_t packed_network::bytes() const {
  std::size_t total = 0;
  for (const stage& st : stages_)
    total += 8 * (st.bt.size() + st.planes_t.size()) +
             4 * (st.rowsum.size() + st.row_pattern.size() + st.corrections.size() + st.thresholds.size() +
                  st.float_thresholds.size() + st.sign_flip.size() + st.sign_thresholds.size() + st.gamma.size() +
                  st.beta.size() + st.mean.size() + st.inv_std.size()) +
             st.descending.size();
  return total;
}

void packed_network::release_buffers() {
  // Assigning {} would keep the capacity: swap with empty vectors.
  std::vector<std::uint64_t>().swap(planes_in_);
  std::vector<std::uint64_t>().swap(planes_out_);
  std::vector<std::uint64_t>().swap(cols_);
  std::vector<float>().swap(float_cols_);
  std::vector<std::int32_t>().swap(counts_);
  std::vector<std::int32_t>().swap(sums_);
  std::vector<float>().swap(floats_);
  std::vector<float>().swap(plane_floats_);
}

void packed_network::run(const float* x, std::size_t rows, float* scores, const runtime& rt) {
  if (rows == 0) return;
  const stage& first = stages_.front();
  const std::size_t n = rows * input_size();
  // Bytes when every input is p/255 for an integer p in [0, 255].
  used_bytes_ = true;
  for (std::size_t e = 0; e < n && used_bytes_; ++e) {
    const float scaled = x[e] * 255.0f;
    const float p = std::nearbyint(scaled);
    used_bytes_ = p >= 0.0f && p <= 255.0f && std::fabs(scaled - p) <= 1e-3f;
  }
  if (used_bytes_) {  // 8 planes [8][rows * positions][words(channels)]
    const std::size_t c = first.channels, words = first.tap_words, positions = rows * first.in_positions();
    const std::size_t plane = positions * words;
    planes_in_.resize(8 * plane);
    parallel_rows(rt, positions, 256, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r)
        for (std::size_t w = 0; w < words; ++w) {
          std::uint64_t word[8] = {};
          for (std::size_t ch = w * 64; ch < std::min(c, w * 64 + 64); ++ch) {
            const auto p = static_cast<std::uint32_t>(std::nearbyint(x[r * c + ch] * 255.0f));
            for (std::size_t b = 0; b < 8; ++b) word[b] |= static_cast<std::uint64_t>((p >> b) & 1u) << (ch % 64);
          }
          for (std::size_t b = 0; b < 8; ++b) planes_in_[b * plane + r * words + w] = word[b];
        }
    });
  }
  for (std::size_t s = 0; s < stages_.size(); ++s) {
    run_stage(stages_[s], s == 0, x, rows, scores, rt);
    std::swap(planes_in_, planes_out_);
  }
}

void packed_network::run_stage(const stage& st, bool first, const float* x, std::size_t rows, float* scores,
                               const runtime& rt) {
  const auto& k = kernels::active_kernels();
  const bool float_input = first && !used_bytes_, bytes = first && used_bytes_;
  const std::size_t ab = bytes ? 8 : static_cast<std::size_t>(st.input_bits);
  const std::size_t wb = static_cast<std::size_t>(st.weight_bits);
  const std::size_t out = st.out, kw = st.k_words(), kb = st.k_bits();
  const std::size_t p_in = st.in_positions(), p_out = st.out_positions(), p_final = st.final_positions();
  // Input planes' stride: a convolution's map, or a dense layer's K words per example.
  const std::size_t in_plane = rows * (st.conv ? p_in * st.tap_words : kw);
  const std::size_t out_plane = rows * p_final * kernels::words_for(out);
  const bool single = ab == 1 && wb == 1;  // BNN: the counts are the sums
  if (st.output_bits > 0) planes_out_.resize(static_cast<std::size_t>(st.output_bits) * out_plane);
  std::uint64_t* planes_out = planes_out_.data();
  const bool gather = st.conv && !float_input;  // bit im2col
  std::size_t per_example = p_out * out * 4 * (single ? 1 : 2);
  if (float_input) per_example = p_out * (out * 4 * (wb > 1 ? 2 : 1) + (st.conv ? kb * 4 : 0));
  if (gather) per_example += p_out * kw * 8;
  const std::size_t slab = std::max<std::size_t>(1, slab_budget / per_example);
  const std::size_t pattern_period = std::max<std::size_t>(1, st.row_pattern.size());
  for (std::size_t e0 = 0; e0 < rows; e0 += slab) {
    const std::size_t n = std::min(slab, rows - e0), m = n * p_out;
    const float* a_floats = nullptr;
    const std::uint64_t* a = nullptr;
    std::size_t a_plane = 0;
    if (float_input) {
      if (st.conv) {
        conv_shape shape;
        shape.height = st.height;
        shape.width = st.width;
        shape.in_channels = st.channels;
        shape.out_channels = out;
        shape.kernel = st.kernel;
        shape.same_padding = st.same_padding;
        float_cols_.resize(m * kb);
        parallel_rows(rt, n, 1, [&](std::size_t i0, std::size_t i1) {
          for (std::size_t e = i0; e < i1; ++e)
            detail::conv_im2col(x + (e0 + e) * p_in * st.channels, shape, float_cols_.data() + e * p_out * kb);
        });
        a_floats = float_cols_.data();
      } else {
        a_floats = x + e0 * kb;
      }
      floats_.resize(m * out);
      if (wb > 1) plane_floats_.resize(m * out);
    } else if (!gather) {  // dense: each example's row is already its K words
      a = planes_in_.data() + e0 * kw;
      a_plane = in_plane;
    }
    // Gathers input plane pa of the slab's examples into cols_ (one plane at a time, so that the 8 planes
    // of byte inputs need no more scratch than one).
    // Gathers conv row oy of slab example e from input plane pa into cols_ (slab rows e * p_out + oy * ow + ox).
    auto gather_row = [&](std::size_t pa, std::size_t e, std::size_t oy) {
      const std::size_t tw = st.tap_words, kernel = st.kernel;
      const auto pad = st.same_padding ? static_cast<std::ptrdiff_t>((kernel - 1) / 2) : 0;
      const std::uint64_t* map = planes_in_.data() + pa * in_plane + (e0 + e) * p_in * tw;
      for (std::size_t ox = 0; ox < st.out_width; ++ox) {
        std::uint64_t* row = cols_.data() + (e * p_out + oy * st.out_width + ox) * kw;
        for (std::size_t ky = 0; ky < kernel; ++ky) {
          const std::ptrdiff_t iy = static_cast<std::ptrdiff_t>(oy + ky) - pad;
          for (std::size_t kx = 0; kx < kernel; ++kx) {
            const std::ptrdiff_t ix = static_cast<std::ptrdiff_t>(ox + kx) - pad;
            std::uint64_t* tap = row + (ky * kernel + kx) * tw;
            // A few words per tap: plain loops, not library calls.
            if (iy < 0 || iy >= static_cast<std::ptrdiff_t>(st.height) || ix < 0 ||
                ix >= static_cast<std::ptrdiff_t>(st.width)) {
              for (std::size_t q = 0; q < tw; ++q) tap[q] = 0;
            } else {
              const std::uint64_t* source =
                  map + (static_cast<std::size_t>(iy) * st.width + static_cast<std::size_t>(ix)) * tw;
              for (std::size_t q = 0; q < tw; ++q) tap[q] = source[q];
            }
          }
        }
      }
    };
    // Integer sums of slab rows [i0, i1) x channels [j0, j1) from the A operand `a` (row i at a + i * kw,
    // input plane pa at a + pa * a_plane) into sums_, with the padding correction when `correct`.
    auto multiply = [&](const std::uint64_t* a, std::size_t a_plane, std::size_t pa0, std::size_t pa1, std::size_t i0,
                        std::size_t i1, std::size_t j0, std::size_t j1, bool correct) {
      std::int32_t* sums = sums_.data();
      for (std::size_t pa = pa0; pa < pa1; ++pa)
        for (std::size_t pw = 0; pw < wb; ++pw) {
          k.gemm_xnor({.m = i1 - i0,
                       .n = j1 - j0,
                       .k_words = kw,
                       .k_bits = static_cast<std::int32_t>(kb),
                       .a = a + pa * a_plane + i0 * kw,
                       .lda = kw,
                       .bt = st.bt.data() + pw * kw * out + j0,
                       .ldbt = out,
                       .c = (single ? sums : counts_.data()) + i0 * out + j0,
                       .ldc = out});
          if (single) break;
          const bool start = pa == 0 && pw == 0;
          for (std::size_t i = i0; i < i1; ++i) {
            const std::int32_t* c = counts_.data() + i * out;
            std::int32_t* sum = sums + i * out;
            if (bytes) {  // sum_j 2^j sum_b 2^b (c + rowsum_j) / 2, (c + rowsum_j) even (header comment)
              const std::int32_t* rs = st.rowsum.data() + pw * out;
              const int shift = static_cast<int>(pa + pw) - 1;
              for (std::size_t j = j0; j < j1; ++j) {
                const std::int32_t term = shift < 0 ? (c[j] + rs[j]) / 2 : (c[j] + rs[j]) * (1 << shift);
                sum[j] = (start ? 0 : sum[j]) + term;
              }
            } else {
              const std::int32_t scale = std::int32_t{1} << (pa + pw);
              for (std::size_t j = j0; j < j1; ++j) sum[j] = (start ? 0 : sum[j]) + c[j] * scale;
            }
          }
        }
      if (!correct || st.corrections.empty()) return;
      for (std::size_t i = i0; i < i1; ++i) {
        const std::int32_t* corr = st.corrections.data() + st.row_pattern[i % pattern_period] * out;
        std::int32_t* sum = sums + i * out;
        for (std::size_t j = j0; j < j1; ++j) sum[j] += corr[j];
      }
    };
    // Output row of slab row i (no pooling): example e0 + i / p_out, position i % p_out.
    const std::size_t row0 = e0 * p_final;
    // 2x2 max-pooling of the slab's sums at pooled position (e, fy, fx) (floats on the first layer's float
    // path, compared as the max-pool layer does), then the thresholds.
    auto pool_emit = [&](std::size_t e, std::size_t fy, std::size_t fx) {
      const std::size_t ow = st.out_width;
      const std::size_t q = e * p_out + (2 * fy) * ow + 2 * fx;  // slab row of the window's first position
      const std::size_t cands[3] = {q + 1, q + ow, q + ow + 1};
      const std::size_t out_row = row0 + e * p_final + fy * st.final_width + fx;
      if (float_input) {
        const float* v = floats_.data();
        st.emit(
            out_row, out_plane, 0, out,
            [&](std::size_t j) {
              float best = v[q * out + j];
              for (std::size_t cand : cands) best = v[cand * out + j] > best ? v[cand * out + j] : best;
              return best;
            },
            planes_out, scores);
      } else {
        const std::int32_t* s = sums_.data();
        st.emit(
            out_row, out_plane, 0, out,
            [&](std::size_t j) {
              std::int32_t best = s[q * out + j];
              for (std::size_t cand : cands) best = std::max(best, s[cand * out + j]);
              return best;
            },
            planes_out, scores);
      }
    };
    if (!float_input) {
      sums_.resize(m * out);
      if (!single) counts_.resize(m * out);
    }
    if (gather) {
      // Packed convolution, fused: units of one output row (two conv rows when pooled; an odd last conv row
      // that no window reads is skipped), each gathered, multiplied, corrected and thresholded by the task
      // that owns it, while its rows are in cache, in one parallel pass per slab.
      cols_.resize(m * kw);
      const std::size_t unit_rows = st.pool ? 2 : 1, per_example = st.pool ? st.final_height : st.out_height;
      const std::size_t units = n * per_example, ow = st.out_width;
      const std::size_t threads = static_cast<std::size_t>(std::max(1, rt.threads()));
      parallel_rows(rt, units, std::max<std::size_t>(1, units / (4 * threads)), [&](std::size_t u0, std::size_t u1) {
        for (std::size_t u = u0; u < u1; ++u) {
          const std::size_t e = u / per_example, y0 = (u % per_example) * unit_rows;
          const std::size_t i0 = e * p_out + y0 * ow, i1 = i0 + unit_rows * ow;
          for (std::size_t pa = 0; pa < ab; ++pa) {
            for (std::size_t y = y0; y < y0 + unit_rows; ++y) gather_row(pa, e, y);
            multiply(cols_.data(), 0, pa, pa + 1, i0, i1, 0, out, pa + 1 == ab);
          }
          if (st.pool) {
            for (std::size_t fx = 0; fx < st.final_width; ++fx) pool_emit(e, y0 / 2, fx);
          } else {
            for (std::size_t i = i0; i < i1; ++i) {
              const std::int32_t* sum = sums_.data() + i * out;
              st.emit(
                  row0 + i, out_plane, 0, out, [sum](std::size_t j) { return sum[j]; }, planes_out, scores);
            }
          }
        }
      });
      continue;
    }
    parallel_gemm(rt, m, out, [&](std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1) {
      if (float_input) {
        detail::binary_planes_block(k, st.weight_bits, a_floats, kb, st.planes_t.data(), kb * kernels::words_for(out),
                                    out, floats_.data(), plane_floats_.data(), i0, i1, j0, j1);
        if (!st.pool)
          for (std::size_t i = i0; i < i1; ++i) {
            const float* v = floats_.data() + i * out;
            st.emit(
                row0 + i, out_plane, j0, j1, [v](std::size_t j) { return v[j]; }, planes_out, scores);
          }
        return;
      }
      multiply(a, a_plane, 0, ab, i0, i1, j0, j1, true);
      if (!st.pool)
        for (std::size_t i = i0; i < i1; ++i) {
          const std::int32_t* sum = sums_.data() + i * out;
          st.emit(
              row0 + i, out_plane, j0, j1, [sum](std::size_t j) { return sum[j]; }, planes_out, scores);
        }
    });
    if (!st.pool) continue;
    parallel_rows(rt, n * st.final_height, 1, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r)
        for (std::size_t fx = 0; fx < st.final_width; ++fx) pool_emit(r / st.final_height, r % st.final_height, fx);
    });
  }
}

}  // namespace fewmul
