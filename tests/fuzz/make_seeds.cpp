// Writes small valid seed inputs for every fuzz target into DIR/<target>/ (the fixtures' formats, cut
// down so that the fuzzers mutate them quickly).
#include <spng.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <fstream>
#include <iostream>

#include "fewmul/model.hpp"

namespace fs = std::filesystem;
using bytes = std::vector<unsigned char>;

namespace {

void write(const fs::path& path, const bytes& b) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void put_u32be(bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
}

template <class T>
void put_le(bytes& b, T v) {
  const auto* p = reinterpret_cast<const unsigned char*>(&v);
  b.insert(b.end(), p, p + sizeof v);
}

// One MAT-file v5 element: tag, data, padding to 8 bytes.
void element(bytes& b, std::uint32_t type, const bytes& data) {
  put_le<std::uint32_t>(b, type);
  put_le<std::uint32_t>(b, static_cast<std::uint32_t>(data.size()));
  b.insert(b.end(), data.begin(), data.end());
  while (b.size() % 8) b.push_back(0);
}

bytes matrix(const char* name, std::uint32_t array_class, const std::vector<std::int32_t>& dims, std::uint32_t type,
             const bytes& real) {
  bytes m, flags, d, n(name, name + std::strlen(name));
  put_le<std::uint32_t>(flags, array_class);
  put_le<std::uint32_t>(flags, 0);
  for (auto v : dims) put_le<std::int32_t>(d, v);
  element(m, 6, flags);
  element(m, 5, d);
  element(m, 1, n);
  element(m, type, real);
  bytes out;
  element(out, 14, m);
  return out;
}

bytes mat_file(std::size_t images, bool compressed) {
  bytes file(128, ' ');
  const char text[] = "MATLAB 5.0 MAT-file, fewmul fuzz seed";
  std::memcpy(file.data(), text, sizeof text - 1);
  file[124] = 0;
  file[125] = 1;
  file[126] = 'I';
  file[127] = 'M';
  bytes x(32 * 32 * 3 * images), y;
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<unsigned char>(i * 7);
  for (std::size_t i = 0; i < images; ++i) put_le<double>(y, static_cast<double>(i % 10 + 1));
  for (const bytes& e : {matrix("X", 9, {32, 32, 3, static_cast<std::int32_t>(images)}, 2, x),
                         matrix("y", 6, {static_cast<std::int32_t>(images), 1}, 9, y)}) {
    if (!compressed) {
      file.insert(file.end(), e.begin(), e.end());
      continue;
    }
    uLongf size = compressBound(e.size());
    bytes z(size);
    compress(z.data(), &size, e.data(), e.size());
    z.resize(size);
    put_le<std::uint32_t>(file, 15);
    put_le<std::uint32_t>(file, static_cast<std::uint32_t>(z.size()));
    file.insert(file.end(), z.begin(), z.end());
  }
  return file;
}

bytes png_sheet(std::uint32_t rows) {
  std::vector<unsigned char> rgb(1024 * rows * 3);
  for (std::size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<unsigned char>(i * 13);
  spng_ctx* ctx = spng_ctx_new(SPNG_CTX_ENCODER);
  spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
  spng_ihdr ihdr{1024, rows, 8, SPNG_COLOR_TYPE_TRUECOLOR, 0, 0, 0};
  spng_set_ihdr(ctx, &ihdr);
  spng_encode_image(ctx, rgb.data(), rgb.size(), SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
  std::size_t size = 0;
  int e = 0;
  auto* png = static_cast<unsigned char*>(spng_get_png_buffer(ctx, &size, &e));
  bytes out(png, png + size);
  std::free(png);
  spng_ctx_free(ctx);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fewmul_fuzz_seeds DIR\n";
    return 2;
  }
  const fs::path dir(argv[1]);
  // IDX: two 28x28 images, two labels, and the images gzip-compressed.
  bytes images, labels;
  put_u32be(images, 0x803);
  put_u32be(images, 2);
  put_u32be(images, 28);
  put_u32be(images, 28);
  for (int i = 0; i < 2 * 784; ++i) images.push_back(static_cast<unsigned char>(i));
  put_u32be(labels, 0x801);
  put_u32be(labels, 2);
  labels.push_back(3);
  labels.push_back(9);
  write(dir / "idx/images", images);
  write(dir / "idx/labels", labels);
  {
    fs::create_directories(dir / "idx");
    gzFile gz = gzopen((dir / "idx/images.gz").c_str(), "wb");
    gzwrite(gz, images.data(), static_cast<unsigned>(images.size()));
    gzclose(gz);
  }
  // CIFAR-10: two records.
  bytes cifar;
  for (int r = 0; r < 2; ++r) {
    cifar.push_back(static_cast<unsigned char>(r * 5));
    for (int i = 0; i < 3072; ++i) cifar.push_back(static_cast<unsigned char>(i * 3 + r));
  }
  write(dir / "cifar_batch/two_records.bin", cifar);
  write(dir / "cifar_png/sheet.png", png_sheet(2));
  const std::string json = "[6,9,9,4,1,1,2,7,8,3]";
  write(dir / "cifar_png/labels.json", bytes(json.begin(), json.end()));
  // Flag texts (and, read as a configuration, their bytes).
  for (const std::string flag : {"0.3", "1e-50", "nan", "20", "18446744073709551617", "-1", "0x10", "3.5e38"})
    write(dir / ("settings/" + std::to_string(std::hash<std::string>{}(flag) % 100000)),
          bytes(flag.begin(), flag.end()));
  write(dir / "svhn_mat/plain.mat", mat_file(2, false));
  write(dir / "svhn_mat/compressed.mat", mat_file(2, true));
  // Models: a packed binary MLP, a ternary convnet, and an MLP training checkpoint.
  fewmul::model_metadata meta;
  meta.height = 1;
  meta.width = 12;
  meta.channels = 1;
  fs::create_directories(dir / "model");
  fewmul::network mlp =
      fewmul::make_mlp(12, {70}, 3, fewmul::dense_options_for(fewmul::method::bc), fewmul::activation::relu, 1);
  fewmul::save_model((dir / "model/mlp_bc.fwm").string(), mlp, meta);
  // A 3-bit QNN with dropout and shift-based batch norm (the version-3 layer kinds).
  fewmul::network_architecture qnn;
  qnn.height = 1;
  qnn.width = 12;
  qnn.hidden = {9};
  qnn.outputs = 3;
  qnn.act = fewmul::activation::quantized;
  qnn.activation_bits = 2;
  qnn.dropout_hidden = 0.5f;
  qnn.shift_batch_norm = true;
  fewmul::network qnn_net = fewmul::make_network(qnn, fewmul::dense_options_for(fewmul::method::qnn, -4, 3, 3), 3);
  fewmul::save_model((dir / "model/mlp_qnn.fwm").string(), qnn_net, meta);
  fewmul::network_architecture conv;
  conv.height = conv.width = 6;
  conv.channels = 2;
  conv.conv = {3, 0};
  conv.hidden = {5};
  conv.outputs = 2;
  fewmul::network cnn = fewmul::make_network(conv, fewmul::dense_options_for(fewmul::method::tc), 2);
  meta.height = meta.width = 6;
  meta.channels = 2;
  meta.preprocess.gcn = true;
  fewmul::save_model((dir / "model/convnet_tc.fwm").string(), cnn, meta);
  fewmul::checkpoint c;
  c.architecture.height = 1;
  c.architecture.width = 12;
  c.architecture.hidden = {16};
  c.architecture.outputs = 3;
  c.meta = meta;
  c.meta.height = 1;
  c.meta.width = 12;
  c.meta.channels = 1;
  c.state.network_state = fewmul::make_network(c).snapshot();
  fewmul::save_checkpoint((dir / "model/mlp.ckpt").string(), c);
  return 0;
}
