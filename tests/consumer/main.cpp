// Builds a small binary network, saves it as a model file, loads it back and runs a batch.
#include <fewmul/fewmul.hpp>

#include <cstdio>
#include <filesystem>

int main() {
  try {
    fewmul::network net =
        fewmul::make_mlp(16, {32}, 4, fewmul::dense_options_for(fewmul::method::bc), fewmul::activation::relu, 1);
    fewmul::model_metadata meta;
    meta.width = 4;
    meta.height = 4;
    const std::string path = (std::filesystem::temp_directory_path() / "fewmul_consumer.fwm").string();
    fewmul::save_model(path, net, meta);
    fewmul::model m = fewmul::load_model(path);
    fewmul::runtime rt(1);
    fewmul::matrix x(3, 16);
    for (std::size_t i = 0; i < x.data.size(); ++i) x.data[i] = static_cast<float>(i % 7) / 7.0f;
    const fewmul::matrix& y = m.run(x, rt);
    std::filesystem::remove(path);
    std::printf("consumer: %zu x %zu scores, isa %s\n", y.rows, y.cols,
                std::string(fewmul::isa_name(fewmul::active_isa())).c_str());
    return y.rows == 3 && y.cols == 4 ? 0 : 1;
  } catch (const fewmul::error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
