// Builds a small binary network, saves it as a model file, loads it back and runs a batch; defines a layer
// of its own against the public layer interface and checks that saving a network holding it is refused.
#include <fewmul/fewmul.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

// The umbrella header is the public API: the kernel layer (fewmul/kernels.hpp) stays out of it.
template <class T>
concept complete_type = requires {
  sizeof(T);
};
static_assert(!complete_type<fewmul::kernels::kernel_table>, "fewmul/fewmul.hpp exposes the kernel table");

namespace {

// A user's layer: y = 2x, written against fewmul::layer alone (no engine header, no serialization).
class doubling_layer final : public fewmul::layer {
 public:
  explicit doubling_layer(std::size_t features) : features_(features) {}
  std::string describe() const override { return "doubling " + std::to_string(features_); }
  std::size_t input_size() const override { return features_; }
  std::size_t output_size() const override { return features_; }
  void forward(const fewmul::matrix& x, fewmul::matrix& y, const fewmul::step_context&) override {
    y.resize(x.rows, x.cols);
    for (std::size_t i = 0; i < x.data.size(); ++i) y.data[i] = 2.0f * x.data[i];
  }
  void backward(const fewmul::matrix&, const fewmul::matrix&, const fewmul::matrix& dy, fewmul::matrix* dx,
                const fewmul::step_context&) override {
    if (dx == nullptr) return;
    dx->resize(dy.rows, dy.cols);
    for (std::size_t i = 0; i < dy.data.size(); ++i) dx->data[i] = 2.0f * dy.data[i];
  }
  fewmul::op_counts training_ops(std::size_t batch, bool input_gradient) const override {
    fewmul::op_counts c;
    c.multiplications = static_cast<double>(batch * features_) * (input_gradient ? 2.0 : 1.0);
    return c;
  }

 private:
  std::size_t features_;
};

}  // namespace

int main() {
  const std::string path = (std::filesystem::temp_directory_path() / "fewmul_consumer.fwm").string();
  try {
    fewmul::network net =
        fewmul::make_mlp(16, {32}, 4, fewmul::dense_options_for(fewmul::method::bc), fewmul::activation::relu, 1);
    fewmul::model_metadata meta;
    meta.width = 4;
    meta.height = 4;
    fewmul::save_model(path, net, meta);
    fewmul::model m = fewmul::load_model(path);
    fewmul::runtime rt(1);
    fewmul::matrix x(3, 16);
    for (std::size_t i = 0; i < x.data.size(); ++i) x.data[i] = static_cast<float>(i % 7) / 7.0f;
    const fewmul::matrix& y = m.run(x, rt);
    std::filesystem::remove(path);
    std::printf("consumer: %zu x %zu scores, isa %s\n", y.rows, y.cols,
                std::string(fewmul::isa_name(fewmul::active_isa())).c_str());
    if (y.rows != 3 || y.cols != 4) return 1;
  } catch (const fewmul::error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
  // The user's layer joins a network; model files hold only the engine's layer types, so saving says which
  // layer it cannot store.
  fewmul::network net =
      fewmul::make_mlp(16, {32}, 4, fewmul::dense_options_for(fewmul::method::bc), fewmul::activation::relu, 1);
  net.add(std::make_unique<doubling_layer>(4));
  if (net.training_ops(2).multiplications < 8.0) return 1;
  try {
    fewmul::save_model(path, net, fewmul::model_metadata{});
    std::fprintf(stderr, "consumer: a network with a user-defined layer was saved\n");
    return 1;
  } catch (const fewmul::error& e) {
    if (std::string(e.what()).find("doubling 4") == std::string::npos) {
      std::fprintf(stderr, "consumer: the error does not name the layer: %s\n", e.what());
      return 1;
    }
    std::printf("consumer: %s\n", e.what());
  }
  return std::filesystem::exists(path) ? 1 : 0;
}
