// The weights of a dense or convolution layer in model and checkpoint files, after the layer's own header:
// kind, training sampling, qbp flag, qbp range, lr-scale mode (u8, u8, u8, i32, i32, u8), the weight bits
// (u8) for kinds that take them, then the weights: float32 values [out][in], or in a packed (inference)
// model the kind's deterministic bit arrays [out][words(in)] in the vectors weight_kinds.hpp names for it.
#include <cmath>
#include <string>

#include "layers/weight_core.hpp"
#include "model/serialize.hpp"

namespace fewmul::detail {
namespace {

// One vector of all arrays, or one vector per array.
std::size_t stored_vectors(const weight_kind_traits& t) { return t.stored_as[1] == nullptr ? 1 : 2; }

}  // namespace

void weight_core::write(byte_writer& out, bool packed) const {
  out.put<std::uint8_t>(static_cast<std::uint8_t>(options_.kind));
  const bool as_bits = packed && traits_->sampled;
  // A packed model is an inference model: deterministic weights, no quantized backprop.
  out.put<std::uint8_t>(as_bits ? 0 : static_cast<std::uint8_t>(options_.training_sampling));
  out.put<std::uint8_t>(as_bits ? 0 : options_.qbp);
  out.put<std::int32_t>(options_.qbp_kmin);
  out.put<std::int32_t>(options_.qbp_kmax);
  out.put<std::uint8_t>(static_cast<std::uint8_t>(options_.lr_scale));
  if (traits_->variable_bits) out.put<std::uint8_t>(static_cast<std::uint8_t>(options_.weight_bits));
  if (!as_bits) {
    if (weight_.value.empty() && !loaded_planes_.empty()) {  // decode a copy; this object stays packed
      weight_core copy = *this;
      copy.materialize();
      out.put_vector(copy.weight_.value);
    } else {
      out.put_vector(weight_.value);
    }
    return;
  }
  const std::vector<std::uint64_t> bits = inference_planes();
  const std::size_t vectors = stored_vectors(*traits_), per_vector = bits.size() / vectors;
  if (vectors == 1) return out.put_vector(bits);
  for (std::size_t v = 0; v < vectors; ++v)
    out.put_vector(std::vector<std::uint64_t>(bits.begin() + static_cast<std::ptrdiff_t>(v * per_vector),
                                              bits.begin() + static_cast<std::ptrdiff_t>((v + 1) * per_vector)));
}

void weight_core::expect_payload(byte_reader& in, std::size_t inputs, std::size_t outputs, const dense_options& o,
                                 bool packed) {
  const weight_kind_traits& t = kind_traits(o.kind);
  const bool as_bits = packed && t.sampled;
  const double bytes = as_bits ? static_cast<double>(t.arrays(o)) * static_cast<double>(outputs) *
                                     static_cast<double>(kernels::words_for(inputs)) * 8.0
                               : static_cast<double>(outputs) * static_cast<double>(inputs) * 4.0;
  if (bytes > static_cast<double>(in.remaining()))
    in.invalid("weights of " + std::to_string(outputs) + "x" + std::to_string(inputs) +
               " run past the end of the data");
}

dense_options weight_core::read_options(byte_reader& in) {
  dense_options o;
  const auto kind = in.get<std::uint8_t>("weight kind");
  const auto sampling = in.get<std::uint8_t>("sampling mode");
  const auto qbp = in.get<std::uint8_t>("qbp flag");
  o.qbp_kmin = in.get<std::int32_t>("qbp range");
  o.qbp_kmax = in.get<std::int32_t>("qbp range");
  const auto glorot = in.get<std::uint8_t>("lr scale flag");
  if (kind >= weight_kind_count || sampling > 1 || qbp > 1 || glorot > 2) in.invalid("unknown weight layer options");
  o.kind = static_cast<weight_kind>(kind);
  if (kind_traits(o.kind).variable_bits) {
    o.weight_bits = in.get<std::uint8_t>("weight bits");
    if (o.weight_bits < 2 || o.weight_bits > 8 || sampling != 0) in.invalid("bad k-bit weight options");
  }
  o.training_sampling = static_cast<kernels::sample_mode>(sampling);
  o.qbp = qbp != 0;
  o.lr_scale = static_cast<lr_scale_kind>(glorot);
  return o;
}

void weight_core::read(byte_reader& in, bool packed) {
  std::vector<float>& w = weight_.value;
  if (!packed || !traits_->sampled) {
    w = in.get_vector<float>("weights", in_ * out_);
    for (float v : w)
      if (!std::isfinite(v)) in.invalid("non-finite weight");
    weight_.grad.assign(in_ * out_, 0.0f);
    return;
  }
  const std::size_t words = kernels::words_for(in_), array_words = out_ * words;
  const std::size_t arrays = static_cast<std::size_t>(traits_->arrays(options_));
  const std::size_t vectors = stored_vectors(*traits_), per_vector = arrays / vectors;
  std::vector<std::uint64_t> bits;
  for (std::size_t v = 0; v < vectors; ++v) {
    auto part = in.get_vector<std::uint64_t>(traits_->stored_as[v], per_vector * array_words);
    if (vectors == 1)
      bits = std::move(part);
    else
      bits.insert(bits.end(), part.begin(), part.end());
  }
  // ±1 planes stay packed (materialize() decodes them when something needs floats); other kinds decode now.
  const bool keep_packed = traits_->planes;
  if (keep_packed) {
    w.clear();
    weight_.grad.clear();
  } else {
    w.resize(in_ * out_);
    weight_.grad.assign(in_ * out_, 0.0f);
  }
  const std::size_t tail = in_ % 64;
  const std::uint64_t padding = tail ? ~((std::uint64_t{1} << tail) - 1) : 0;
  for (std::size_t r = 0; r < out_; ++r) {
    for (std::size_t a = 0; a < arrays; ++a)
      if (bits[a * array_words + r * words + words - 1] & padding) in.invalid("packed weights have padding bits set");
    if (keep_packed) continue;
    if (const char* wrong = traits_->decode_row(bits.data(), array_words, words, r, in_, options_, w.data() + r * in_))
      in.invalid(wrong);
  }
  if (keep_packed) loaded_planes_ = std::move(bits);
}

}  // namespace fewmul::detail
