// Hostile values: the one validation of every setting (shared by the CLI's flags, train() and the
// checkpoint reader) and the load-time validation of checkpoints and models.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "fewmul/error.hpp"
#include "fewmul/model.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;
namespace fs = std::filesystem;

namespace {

std::string validation_error(const train_config& c) {
  try {
    validate(c);
  } catch (const fewmul::error& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_CASE("every training setting is checked finite and in range, naming its flag") {
  CHECK(validation_error(train_config{}).empty());
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct bad_case {
    void (*set)(train_config&);
    const char* message;
  };
  const bad_case cases[] = {
      {[](train_config& c) { c.lr = std::numeric_limits<float>::quiet_NaN(); }, "--lr must be a number in [1e-06, 1000], not nan"},
      {[](train_config& c) { c.lr = 1e-30f; }, "--lr must be a number in [1e-06, 1000]"},
      {[](train_config& c) { c.lr = -1.0f; }, "--lr must"},
      {[](train_config& c) { c.lr_decay = std::numeric_limits<float>::quiet_NaN(); }, "--lr-decay must"},
      {[](train_config& c) { c.momentum = 1.0f; }, "--momentum must be a number in [0, 0.999], not 1"},
      {[](train_config& c) { c.momentum = std::numeric_limits<float>::quiet_NaN(); }, "--momentum must"},
      {[](train_config& c) { c.epochs = 0; }, "--epochs must be a whole number in [1, 100000], not 0"},
      {[](train_config& c) { c.epochs = std::size_t{1} << 63; }, "--epochs must"},
      {[](train_config& c) { c.batch = 1; }, "--batch must"},
      {[](train_config& c) { c.threads = -1; }, "--threads must"},
      {[](train_config& c) { c.qbp_kmin = 5; }, "--qbp-kmin and --qbp-kmax"},
      {[](train_config& c) { c.weight_bits = 9; }, "--wbits must"},
      {[](train_config& c) { c.augment_shift = 17; }, "--augment-shift must"},
  };
  for (const bad_case& b : cases) {
    train_config c;
    b.set(c);
    CHECK(validation_error(c).find(b.message) == 0);
  }
  network_architecture a;
  a.dropout_hidden = nan;
  CHECK_THROWS_WITH_AS(validate(a), doctest::Contains("--dropout-hidden must"), fewmul::error);
  a.dropout_hidden = 0.5f;
  a.dropout_input = inf;
  CHECK_THROWS_WITH_AS(validate(a), doctest::Contains("--dropout-input must"), fewmul::error);
  // The flag texts: a whole number neither wraps nor takes a sign; a number is all of the text.
  CHECK(whole_text_problem("18446744073709551615", 0, UINT64_MAX).empty());
  CHECK(whole_text_problem("18446744073709551616", 0, UINT64_MAX).find("must be a whole number") == 0);
  CHECK(!whole_text_problem("-1", 0, 10).empty());
  CHECK(!whole_text_problem("1.5", 0, 10).empty());
  CHECK(!whole_text_problem("", 0, 10).empty());
  CHECK(number_text_problem("0.5", 0, 1).empty());
  CHECK(number_text_problem("nan", 0, 1) == "must be a number in [0, 1], not nan");
  CHECK(number_text_problem("1e39", 0, 1000) == "must be a number in [0, 1000], not 1e+39");
  CHECK(!number_text_problem("0.5x", 0, 1).empty());
}
