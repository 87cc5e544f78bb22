// Flag texts and training settings: the shared validators (setting_limits) must refuse with
// fewmul::error, never crash, and whatever they accept must lie inside the documented bounds.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fewmul/error.hpp"
#include "fewmul/train.hpp"

namespace {

// Reads a T from the input (zero once exhausted).
template <class T>
T take(const std::uint8_t*& data, std::size_t& size) {
  T value{};
  const std::size_t n = size < sizeof(T) ? size : sizeof(T);
  std::memcpy(&value, data, n);
  data += n;
  size -= n;
  return value;
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using limits = fewmul::setting_limits;
  // The whole input as the text of a flag.
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (fewmul::number_text_problem(text, limits::lr_min, limits::lr_max).empty()) {
    const double v = std::stod(std::string(text));
    check(std::isfinite(v) && v >= limits::lr_min && v <= limits::lr_max);
  }
  if (fewmul::whole_text_problem(text, limits::epochs_min, limits::epochs_max).empty()) {
    const unsigned long long v = std::stoull(std::string(text));
    check(v >= limits::epochs_min && v <= limits::epochs_max);
  }
  // The same bytes as a configuration.
  fewmul::train_config c;
  c.training_method = static_cast<fewmul::method>(take<std::uint8_t>(data, size) % 8);
  c.epochs = take<std::uint64_t>(data, size);
  c.batch = take<std::uint64_t>(data, size);
  c.lr = take<float>(data, size);
  c.lr_decay = take<float>(data, size);
  c.momentum = take<float>(data, size);
  c.seed = take<std::uint64_t>(data, size);
  c.threads = take<std::int32_t>(data, size);
  c.validation = take<std::uint64_t>(data, size);
  c.qbp_kmin = take<std::int32_t>(data, size);
  c.qbp_kmax = take<std::int32_t>(data, size);
  c.weight_bits = take<std::int32_t>(data, size);
  c.augment_shift = take<std::uint32_t>(data, size);
  c.bn_reestimate_examples = take<std::uint64_t>(data, size);
  try {
    fewmul::validate(c);
    check(c.epochs >= limits::epochs_min && c.epochs <= limits::epochs_max);
    check(c.batch >= limits::batch_min && c.batch <= limits::batch_max);
    check(std::isfinite(c.lr) && c.lr >= limits::lr_min && c.lr <= limits::lr_max);
    check(std::isfinite(c.lr_decay) && c.lr_decay >= limits::lr_decay_min && c.lr_decay <= limits::lr_decay_max);
    check(std::isfinite(c.momentum) && c.momentum >= limits::momentum_min && c.momentum <= limits::momentum_max);
    check(c.qbp_kmin <= c.qbp_kmax);
  } catch (const fewmul::error&) {
  }
  fewmul::network_architecture a;
  a.dropout_input = take<float>(data, size);
  a.dropout_hidden = take<float>(data, size);
  a.activation_bits = take<std::int32_t>(data, size);
  try {
    fewmul::validate(a);
    check(std::isfinite(a.dropout_input) && a.dropout_input >= limits::dropout_min &&
          a.dropout_input <= limits::dropout_max);
    check(std::isfinite(a.dropout_hidden) && a.dropout_hidden >= limits::dropout_min &&
          a.dropout_hidden <= limits::dropout_max);
  } catch (const fewmul::error&) {
  }
  return 0;
}
