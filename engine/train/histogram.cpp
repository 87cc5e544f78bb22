// Exponent histograms of the hidden representations (Lin et al., the figure of log2|x| per layer that
// motivates quantized backprop's exponent range [kmin, kmax]).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "fewmul/error.hpp"
#include "fewmul/kernels.hpp"
#include "fewmul/train.hpp"

namespace fewmul {

std::vector<layer_exponents> exponent_histogram(network& net, const dataset& data, const runtime& rt,
                                                std::size_t examples) {
  if (data.features != net.input_size())
    throw error("histogram data has " + std::to_string(data.features) + " features, the network expects " +
                std::to_string(net.input_size()));
  const std::size_t n = examples == 0 ? data.size() : std::min(examples, data.size());
  const auto& layers = net.layers();
  std::vector<layer_exponents> result;
  std::vector<std::size_t> weight_layers;  // index in `layers` of each histogrammed layer
  for (std::size_t i = 0; i < layers.size(); ++i) {
    // Layers with weights (dense, conv): their input is what quantized backprop rounds to powers of two.
    const std::string d = layers[i]->describe();
    if (d.rfind("dense", 0) != 0 && d.rfind("conv", 0) != 0) continue;
    weight_layers.push_back(i);
    layer_exponents h;
    h.layer = "layer " + std::to_string(i) + " input (" + d + ")";
    h.counts.assign(static_cast<std::size_t>(h.max_exponent - h.min_exponent + 1), 0);
    result.push_back(std::move(h));
  }
  const kernels::kernel_table& k = kernels::active_kernels();
  // Inference with the deterministic weights and the running batch-norm statistics the trainer left:
  // a training-mode pass would move those statistics and change the run.
  const step_context ctx{.rt = rt, .kernels = k, .seed = 0, .step = 0, .training = false};
  constexpr std::size_t batch = 500;
  matrix x, y;
  for (std::size_t first = 0; first < n; first += batch) {
    const std::size_t rows = std::min(batch, n - first);
    x.resize(rows, data.features);
    std::copy(data.example(first), data.example(first) + rows * data.features, x.data.data());
    std::size_t next = 0;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      if (next < weight_layers.size() && weight_layers[next] == i) {
        layer_exponents& h = result[next++];
        for (float v : x.data) {
          if (v == 0.0f) {
            ++h.zeros;
            continue;
          }
          const int e = std::clamp(std::ilogb(v), h.min_exponent, h.max_exponent);  // floor(log2|v|)
          ++h.counts[static_cast<std::size_t>(e - h.min_exponent)];
        }
      }
      layers[i]->forward(x, y, ctx);
      std::swap(x, y);
    }
  }
  return result;
}

void write_exponent_histogram(const std::string& path, const std::vector<layer_exponents>& layers, std::size_t epoch,
                              std::string_view method) {
  std::string json =
      "{\"epoch\": " + std::to_string(epoch) + ", \"method\": \"" + std::string(method) + "\", \"layers\": [";
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const layer_exponents& h = layers[i];
    json += std::string(i ? ", " : "") + "{\"layer\": \"" + h.layer + "\", \"zeros\": " + std::to_string(h.zeros) +
            ", \"min_exponent\": " + std::to_string(h.min_exponent) + ", \"counts\": [";
    for (std::size_t j = 0; j < h.counts.size(); ++j) json += (j ? ", " : "") + std::to_string(h.counts[j]);
    json += "]}";
  }
  json += "]}\n";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << json;
  out.close();
  if (!out) throw error("cannot write the histogram " + path);
}

}  // namespace fewmul
