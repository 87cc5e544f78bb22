// Model files and training checkpoints (built with FEWMUL_FUZZING: the CRC is not checked, so mutated
// payloads reach the layer and state parsers).
#include "fewmul/model.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz_file(data, size, ".fwm", [](const std::string& path) {
    fewmul::model m = fewmul::load_model(path);
    // A model that loads must also run (skipping absurd but well-formed input sizes).
    if (m.net.input_size() > 65536) return;
    fewmul::runtime rt(1);
    fewmul::matrix x(2, m.net.input_size());
    m.meta.preprocess.apply(x.data.data(), 2, x.cols, rt);
    m.run(x, rt);
    m.infer(x, rt);  // the packed path, where the model compiles to one
  });
  return fuzz_file(data, size, ".ckpt", [](const std::string& path) { fewmul::load_checkpoint(path); });
}
