#pragma once
#include <stdexcept>
#include <string>

namespace fewmul {

/// The one exception type thrown across the public API. what() names the file, flag or layer
/// concerned and the problem; the apps catch it, print it and exit non-zero.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace fewmul
