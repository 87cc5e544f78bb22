// fewmul::dataset's own operations (the loaders are in mnist.cpp and image_datasets.cpp).
#include <cstddef>

#include "fewmul/data.hpp"
#include "fewmul/error.hpp"

namespace fewmul {

dataset dataset::slice(std::size_t first, std::size_t count) const {
  if (first + count > size()) throw error("dataset slice out of range");
  dataset out;
  out.features = features;
  out.classes = classes;
  out.height = height;
  out.width = width;
  out.channels = channels;
  if (borrowed_x != nullptr)
    out.borrowed_x = borrowed_x + first * features;
  else
    out.x.assign(x.begin() + static_cast<std::ptrdiff_t>(first * features),
                 x.begin() + static_cast<std::ptrdiff_t>((first + count) * features));
  out.y.assign(y.begin() + static_cast<std::ptrdiff_t>(first), y.begin() + static_cast<std::ptrdiff_t>(first + count));
  return out;
}

}  // namespace fewmul
