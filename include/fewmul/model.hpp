#pragma once
// Model files (packed, for inference) and training checkpoints (master weights and optimizer state).
//
// Both are one container: 8-byte magic ("FEWMULM1" model, "FEWMULC1" checkpoint), u32 format version,
// u64 payload size, the payload, and the payload's CRC-32 (zlib). Files are written to a temporary
// "<path>.tmp.<pid>.<random>", flushed and renamed over <path>, so a crash or a full disk never leaves a
// half-written file behind the final name and concurrent writers never share a temporary. Only nothing or
// a fewmul file of the same kind is replaced: a data file, a device, a directory, a symbolic link or a
// file of the other kind makes the save throw before anything is written.
// Loading a truncated, corrupted, mislabelled or newer-version file throws
// fewmul::error naming the file and the problem.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fewmul/network.hpp"
#include "fewmul/packed_network.hpp"
#include "fewmul/train.hpp"

namespace fewmul {

/// Format version this build writes and the newest it reads.
/// Version 2 added convolutional layers, the input preprocessing and convnet checkpoints; version 3
/// k-bit weights and activations, dropout and shift-based batch norm; version 4 the batch-norm
/// re-estimation setting in checkpoints (models are laid out as in version 3); version 5 the number of
/// training examples in checkpoints (a resume on other data is refused); version 6 the learning-rate
/// schedule and final rate in checkpoints, and weight layers' lr_scale_kind 2 (BinaryNet's start and step
/// scale) in models and checkpoints; version 7 convolution kernel sizes, padding and Lin et al.'s pooled
/// fan in checkpoints, even (2x2) valid-padded kernels in models, and the centring and local contrast
/// normalization of the input preprocessing in both. Older files are still read.
/// Version 8 the minibatch part count of checkpoints (data-parallel training, collective.hpp; models are laid out
/// as in version 7); version 9 a checkpoint's epoch history field by field instead of the struct's bytes, and the
/// [-1, 1] input scaling of the preprocessing (BNN convnets) in both.
constexpr std::uint32_t model_format_version = 9;

/// What a model needs besides its layers: how inputs are shaped and scaled, and what it was trained as.
struct model_metadata {
  std::string dataset = "mnist";
  std::string method = "bc+qbp";
  std::uint32_t width = 28, height = 28, channels = 1;  ///< input image shape
  float input_scale = 1.0f / 255.0f;                    ///< feature = pixel * input_scale
  std::vector<std::string> class_names;                 ///< one per output (may be empty)
  preprocessing preprocess;                             ///< applied after input_scale (GCN, ZCA)
};

/// A network ready for inference plus its metadata. Binary and k-bit weights stay packed in memory: a
/// loaded network decodes them into floats only if something trains or differentiates it.
struct model {
  model_metadata meta;
  network net;
  /// The network compiled for bit-plane inference when it is a BNN/QNN packed_network compiles (else
  /// null): the weights are then held twice, both times packed.
  std::unique_ptr<packed_network> packed;
  /// Scores of a batch (rows of width*height*channels features, channel-last, already scaled and
  /// preprocessed) in inference mode, through network::forward.
  const matrix& run(const matrix& x, const runtime& rt);
  /// The same scores through `packed` where there is one (bits end to end; see packed_network.hpp for
  /// the first layer on input bytes), else run().
  const matrix& infer(const matrix& x, const runtime& rt);
  matrix packed_scores;  ///< infer()'s output buffer on the packed path
};

/// Writes `net` as an inference model: binary/ternary weights packed deterministically (sign(W), or
/// round(W) for ternary) at 1 or 2 bits per weight, fp32 layers and batch norm as float32.
/// Returns the file size in bytes.
std::size_t save_model(const std::string& path, network& net, const model_metadata& meta);
/// Reads a model file. Packed layers run exactly as the trainer's deterministic inference does.
model load_model(const std::string& path);
/// Bytes of the same network with every parameter stored as float32 (the comparison of `fewmul export`);
/// packed weights stay packed.
std::size_t float32_parameter_bytes(network& net);

/// A training checkpoint: configuration, architecture and the state train() resumes from
/// (master weights, optimizer moments, progress). Separate from exported inference models.
struct checkpoint {
  train_config config;
  /// Runs of format 5 and older: bnn/qnn weights trained with lr_scale_kind::none (Glorot start, unscaled
  /// Adam steps), which make_network keeps so that they resume bit-identically.
  bool unscaled_binary_net = false;
  network_architecture architecture;
  model_metadata meta;
  training_state state;
};

/// What a file written by save_model or save_checkpoint is.
enum class file_kind { model, checkpoint };

/// Checks, before any work, that `path` may receive a `kind` file (see the top of this header): nothing
/// or a fewmul file of that kind is there, its directory exists and a file can be created in it. Removes
/// the temporaries of killed runs ("<path>.tmp.<pid>.*" whose process is gone) and returns their names.
/// Throws fewmul::error naming `what` (the flag, e.g. "--save-model") and the path.
std::vector<std::string> check_output_path(const std::string& path, file_kind kind, const std::string& what);

/// An advisory lock (flock) on "<path>.lock" for as long as this object lives: a second run given the same
/// path gets fewmul::error naming `what`, the path and the owner's pid instead of tearing the file.
class output_lock {
 public:
  output_lock(const std::string& path, const std::string& what);
  ~output_lock();
  output_lock(const output_lock&) = delete;
  output_lock& operator=(const output_lock&) = delete;

 private:
  std::string lock_path_;
  int fd_ = -1;
};

void save_checkpoint(const std::string& path, const checkpoint& c);
checkpoint load_checkpoint(const std::string& path);
/// The freshly initialized network a checkpoint's run starts from (its architecture, method and seed).
network make_network(const checkpoint& c);
/// Rebuilds the network of a checkpoint with its last (or, with `best`, its best-epoch) parameters.
network network_from_checkpoint(const checkpoint& c, bool best);

}  // namespace fewmul
