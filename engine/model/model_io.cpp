// Model and checkpoint files: one checksummed container, written to a temporary file and renamed.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <random>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "fewmul/error.hpp"
#include "fewmul/model.hpp"
#include "model/architecture.hpp"
#include "layers/layer_io.hpp"
#include "layers/weight_core.hpp"
#include "model/serialize.hpp"

namespace fewmul {
namespace {

constexpr char model_magic[8] = {'F', 'E', 'W', 'M', 'U', 'L', 'M', '1'};
constexpr char checkpoint_magic[8] = {'F', 'E', 'W', 'M', 'U', 'L', 'C', '1'};
constexpr std::size_t header_bytes = 8 + 4 + 8;
constexpr std::uint64_t max_file_bytes = std::uint64_t{1} << 34;

std::uint32_t crc_of(const unsigned char* data, std::size_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (size > 0) {
    const auto chunk = static_cast<uInt>(std::min<std::size_t>(size, 1u << 30));
    crc = crc32(crc, data, chunk);
    data += chunk;
    size -= chunk;
  }
  return static_cast<std::uint32_t>(crc);
}

const char (&magic_of(file_kind kind))[8] { return kind == file_kind::model ? model_magic : checkpoint_magic; }
const char* kind_name(file_kind kind) { return kind == file_kind::model ? "model" : "checkpoint"; }

// "<name>.tmp.<pid>.<random>": unique per process and call, so concurrent writers never share a
// temporary, and a killed run's leftovers can be told from a live run's (check_output_path).
std::string temp_name(const std::string& path) {
  static std::mt19937_64 random{std::random_device{}() ^ static_cast<std::uint64_t>(::getpid())};
  char suffix[40];
  std::snprintf(suffix, sizeof suffix, ".tmp.%ld.%08llx", static_cast<long>(::getpid()),
                static_cast<unsigned long long>(random() & 0xffffffffu));
  return path + suffix;
}

// Throws unless `path` names nothing or a regular fewmul file of `kind` (the only files we replace).
void check_replaceable(const std::string& path, file_kind kind, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    throw error(what + " " + path + ": cannot inspect (" + ec.message() + ")");
  if (!fs::exists(st)) return;
  const char* kind_text = kind_name(kind);
  if (fs::is_symlink(st))
    throw error(what + " " + path + ": is a symbolic link; give the file itself (refusing to replace it)");
  if (fs::is_directory(st)) throw error(what + " " + path + ": is a directory");
  if (!fs::is_regular_file(st))
    throw error(what + " " + path + ": is a device or other special file, not a regular file (refusing to replace it)");
  char head[8] = {};
  std::ifstream in(path, std::ios::binary);
  const bool read = static_cast<bool>(in.read(head, 8));
  if (read && std::memcmp(head, magic_of(kind), 8) == 0) return;
  const file_kind other_kind = kind == file_kind::model ? file_kind::checkpoint : file_kind::model;
  const bool other = read && std::memcmp(head, magic_of(other_kind), 8) == 0;
  throw error(what + " " + path + ": exists and is " +
              (other ? std::string("a fewmul ") + kind_name(other_kind) : std::string("not a fewmul file")) +
              "; only a fewmul " + kind_text + " file is replaced (refusing to overwrite it)");
}

// Writes header + payload + CRC to a unique temporary next to path, flushes it to disk and renames it
// over path, which must be nothing or a fewmul file of the same kind.
std::size_t write_container(const std::string& path, file_kind kind, const std::vector<unsigned char>& payload) {
  check_replaceable(path, kind, kind == file_kind::model ? "model" : "checkpoint");
  const std::string temp = temp_name(path);
  detail::byte_writer header;
  for (char c : magic_of(kind)) header.put<char>(c);
  header.put<std::uint32_t>(model_format_version);
  header.put<std::uint64_t>(payload.size());
  const std::uint32_t crc = crc_of(payload.data(), payload.size());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw error(path + ": cannot create " + temp + " (" + std::strerror(errno) + ")");
  // write() rather than stdio: a short write (full disk, file-size limit) comes back as an errno.
  auto put = [fd](const void* data, std::size_t size) {
    const auto* p = static_cast<const unsigned char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd, p, std::min<std::size_t>(size, std::size_t{1} << 30));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (n == 0) errno = ENOSPC;
        return false;
      }
      p += n;
      size -= static_cast<std::size_t>(n);
    }
    return true;
  };
  bool ok = put(header.bytes().data(), header.bytes().size()) && put(payload.data(), payload.size()) &&
            put(&crc, sizeof crc) && ::fsync(fd) == 0;
  const int saved_errno = errno;
  ok = ::close(fd) == 0 && ok;
  if (!ok) {
    std::remove(temp.c_str());
    throw error(path + ": writing failed (" + std::strerror(saved_errno) + "); any previous " + path + " is unchanged");
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(temp.c_str());
    throw error(path + ": cannot rename " + temp + " into place (" + std::strerror(e) + ")");
  }
  return header.bytes().size() + payload.size() + sizeof crc;
}

// Reads and validates a container; returns its payload and sets `version`.
std::vector<unsigned char> read_container(const std::string& path, const char (&magic)[8], const char* kind,
                                          std::uint32_t& version) {
  const std::vector<unsigned char> bytes = detail::read_file(path, max_file_bytes);
  const std::size_t size = bytes.size();
  if (size < header_bytes + 4)
    throw error(path + ": truncated: " + std::to_string(size) + " bytes is shorter than a header");
  if (std::memcmp(bytes.data(), magic, 8) != 0) {
    const bool want_model = &magic[0] == &model_magic[0];
    const bool other = std::memcmp(bytes.data(), want_model ? checkpoint_magic : model_magic, 8) == 0;
    throw error(path + ": not a fewmul " + kind + " file" +
                (other ? (want_model ? " (it is a training checkpoint: run `fewmul export` first)"
                                     : " (it is an exported model, not a checkpoint)")
                       : " (bad magic)"));
  }
  detail::byte_reader header(bytes.data() + 8, header_bytes - 8, path);
  version = header.get<std::uint32_t>("version");
  const auto payload_size = header.get<std::uint64_t>("payload size");
  if (version > model_format_version)
    throw error(path + ": format version " + std::to_string(version) + " is newer than this build reads (" +
                std::to_string(model_format_version) + "); upgrade fewmul");
  if (version == 0) throw error(path + ": invalid format version 0");
  if (payload_size != size - header_bytes - 4)
    throw error(path + ": truncated or padded: header announces " + std::to_string(payload_size) +
                " payload bytes, the file holds " + std::to_string(size - header_bytes - 4));
  std::uint32_t stored;
  std::memcpy(&stored, bytes.data() + size - 4, 4);
#ifndef FEWMUL_FUZZING  // fuzz builds skip the checksum so that mutated payloads reach the parsers
  if (stored != crc_of(bytes.data() + header_bytes, payload_size)) throw error(path + ": corrupted (CRC-32 mismatch)");
#endif
  return {bytes.begin() + header_bytes, bytes.end() - 4};
}

void write_metadata(detail::byte_writer& out, const model_metadata& m) {
  out.put_string(m.dataset);
  out.put_string(m.method);
  out.put<std::uint32_t>(m.width);
  out.put<std::uint32_t>(m.height);
  out.put<std::uint32_t>(m.channels);
  out.put<float>(m.input_scale);
  out.put<std::uint32_t>(static_cast<std::uint32_t>(m.class_names.size()));
  for (const auto& n : m.class_names) out.put_string(n);
  out.put<std::uint8_t>(m.preprocess.gcn);
  out.put<float>(m.preprocess.gcn_scale);
  out.put_vector(m.preprocess.zca_mean);
  out.put_vector(m.preprocess.zca_matrix);
  out.put_vector(m.preprocess.center_mean);  // version 7: centring and local contrast normalization
  out.put<std::uint32_t>(m.preprocess.lcn_height);
  out.put<std::uint32_t>(m.preprocess.lcn_width);
  out.put<std::uint32_t>(m.preprocess.lcn_channels);
  out.put<std::uint8_t>(m.preprocess.pm1);  // version 9: the [-1, 1] input scaling
}

model_metadata read_metadata(detail::byte_reader& in, std::uint32_t version) {
  model_metadata m;
  m.dataset = in.get_string("dataset name");
  m.method = in.get_string("method name");
  m.width = in.get<std::uint32_t>("input width");
  m.height = in.get<std::uint32_t>("input height");
  m.channels = in.get<std::uint32_t>("input channels");
  m.input_scale = in.get<float>("input scale");
  const auto classes = in.get<std::uint32_t>("class count");
  if (classes > 100000) in.invalid("implausible class count");
  for (std::uint32_t i = 0; i < classes; ++i) m.class_names.push_back(in.get_string("class name"));
  if (version >= 2) {
    const auto gcn = in.get<std::uint8_t>("preprocessing flag");
    if (gcn > 1) in.invalid("bad preprocessing flag");
    m.preprocess.gcn = gcn != 0;
    m.preprocess.gcn_scale = in.get<float>("contrast normalization scale");
    m.preprocess.zca_mean = in.get_vector<float>("whitening mean");
    const std::size_t features = m.preprocess.zca_mean.size();
    m.preprocess.zca_matrix = in.get_vector<float>("whitening matrix", features * features);
    if (!std::isfinite(m.preprocess.gcn_scale) || !(m.preprocess.gcn_scale > 0.0f)) in.invalid("bad contrast scale");
    for (float v : m.preprocess.zca_mean)
      if (!std::isfinite(v)) in.invalid("non-finite whitening mean");
    for (float v : m.preprocess.zca_matrix)
      if (!std::isfinite(v)) in.invalid("non-finite whitening matrix");
  }
  if (version >= 7) {
    m.preprocess.center_mean = in.get_vector<float>("centring mean");
    for (float v : m.preprocess.center_mean)
      if (!std::isfinite(v)) in.invalid("non-finite centring mean");
    m.preprocess.lcn_height = in.get<std::uint32_t>("contrast normalization height");
    m.preprocess.lcn_width = in.get<std::uint32_t>("contrast normalization width");
    m.preprocess.lcn_channels = in.get<std::uint32_t>("contrast normalization channels");
    if (m.preprocess.lcn_channels > 0 && (m.preprocess.lcn_height != m.height || m.preprocess.lcn_width != m.width ||
                                          m.preprocess.lcn_channels > m.channels))
      in.invalid("local contrast normalization of " + std::to_string(m.preprocess.lcn_height) + "x" +
                 std::to_string(m.preprocess.lcn_width) + " images (" + std::to_string(m.preprocess.lcn_channels) +
                 " channels) does not fit the input shape");
  }
  if (version >= 9) {
    const auto pm1 = in.get<std::uint8_t>("input scaling flag");
    if (pm1 > 1) in.invalid("bad input scaling flag");
    m.preprocess.pm1 = pm1 != 0;
  }
  if (m.width == 0 || m.height == 0 || m.channels == 0 || m.width > 65536 || m.height > 65536 || m.channels > 64 ||
      !std::isfinite(m.input_scale) || !(m.input_scale > 0.0f) || m.input_scale > 1e6f)
    in.invalid("bad input shape or scale in the metadata (the scale must be finite, positive and at most 1e6)");
  if (!m.preprocess.center_mean.empty() &&
      m.preprocess.center_mean.size() != std::size_t{m.width} * m.height * m.channels)
    in.invalid("centring fitted on " + std::to_string(m.preprocess.center_mean.size()) + " features, the input has " +
               std::to_string(std::size_t{m.width} * m.height * m.channels));
  if (!m.preprocess.zca_mean.empty() && m.preprocess.zca_mean.size() != std::size_t{m.width} * m.height * m.channels)
    in.invalid("whitening fitted on " + std::to_string(m.preprocess.zca_mean.size()) + " features, the input has " +
               std::to_string(std::size_t{m.width} * m.height * m.channels));
  return m;
}

void write_states(detail::byte_writer& out, const std::vector<std::vector<float>>& states) {
  out.put<std::uint64_t>(states.size());
  for (const auto& s : states) out.put_vector(s);
}

std::vector<std::vector<float>> read_states(detail::byte_reader& in, const char* what) {
  const auto count = in.get<std::uint64_t>(what);
  if (count > 100000) in.invalid(std::string("implausible count in ") + what);
  std::vector<std::vector<float>> states;
  for (std::uint64_t i = 0; i < count; ++i) states.push_back(in.get_vector<float>(what));
  return states;
}

// Stored values beyond this magnitude are refused: no trained network holds them, and they overflow the
// float scores (a batch-norm scale near FLT_MAX made predict print NaN probabilities).
constexpr float max_value = 1e15f;

// Every parameter and batch-norm statistic finite and at most max_value in magnitude, every variance
// non-negative (the running variance is the second of a batch-norm layer's two buffers, the only layer
// with buffers).
void check_values(network& net, const detail::byte_reader& in, const char* which) {
  auto bad = [](float v) { return !std::isfinite(v) || std::fabs(v) > max_value; };
  for (const auto& l : net.layers()) {
    // Packed weights are ±1 or k-bit levels: nothing to check, and nothing to decode.
    const detail::weight_core* core = detail::layer_weights(*l);
    if (core == nullptr || core->resident_planes() == nullptr)
      for (parameter* p : l->parameters())
        for (float v : p->value)
          if (bad(v))
            in.invalid(std::string(which) + "parameter " + p->name + " of layer " + std::to_string(l->index) + " (" +
                       l->describe() + ") is " + std::to_string(v) + ", not a finite value of magnitude at most 1e15");
    const auto buffers = l->buffers();
    for (std::size_t b = 0; b < buffers.size(); ++b)
      for (float v : *buffers[b])
        if (bad(v) || (b == 1 && v < 0.0f))
          in.invalid(std::string(which) + "batch-norm " + (b == 1 ? "variance" : "mean") + " of layer " +
                     std::to_string(l->index) + " (" + l->describe() + ") is " + std::to_string(v));
  }
}

// The progress counters of a checkpoint must describe a run its configuration can have made.
void check_progress(const training_state& s, const train_config& k, const detail::byte_reader& in) {
  const train_result& p = s.progress;
  const std::size_t done = p.epochs.size();
  if (done > k.epochs) in.invalid(std::to_string(done) + " epochs done of a run of " + std::to_string(k.epochs));
  if (done == 0 ? p.best_epoch != 0 : p.best_epoch < 1 || p.best_epoch > done)
    in.invalid("best epoch " + std::to_string(p.best_epoch) + " of " + std::to_string(done) + " epochs done");
  if (s.optimizer_steps < 0 || s.step < done) in.invalid("impossible step counters");
  auto error_rate = [](double e) { return std::isfinite(e) && e >= 0.0 && e <= 1.0; };
  if (!error_rate(p.best_validation_error) || !error_rate(p.test_error_at_best) ||
      !error_rate(p.test_error_packed_at_best) || !std::isfinite(p.total_seconds) || p.total_seconds < 0.0)
    in.invalid("progress holds error rates outside [0, 1] or a bad time");
  for (std::size_t i = 0; i < done; ++i) {
    const epoch_metrics& m = p.epochs[i];
    if (m.epoch != i + 1 || !error_rate(m.train_error) || !error_rate(m.validation_error) ||
        !error_rate(m.test_error) || !error_rate(m.test_error_packed) || !std::isfinite(m.loss) ||
        !std::isfinite(m.lr) || !std::isfinite(m.seconds) || !std::isfinite(m.images_per_second))
      in.invalid("epoch history entry " + std::to_string(i + 1) + " is not a finished epoch's metrics");
  }
  for (const auto& values : s.optimizer_state)
    for (float v : values)
      if (!std::isfinite(v)) in.invalid("non-finite optimizer state");
}

}  // namespace

const matrix& model::run(const matrix& x, const runtime& rt) {
  const step_context ctx{.rt = rt, .kernels = kernels::active_kernels(), .seed = 0, .step = 0, .training = false};
  return net.forward(x, ctx);
}

const matrix& model::infer(const matrix& x, const runtime& rt) {
  if (!packed) return run(x, rt);
  if (x.cols != packed->input_size())
    throw error("inputs of width " + std::to_string(x.cols) + ", the model takes " +
                std::to_string(packed->input_size()));
  packed_scores.resize(x.rows, packed->output_size());
  packed->run(x.data.data(), x.rows, packed_scores.data.data(), rt);
  return packed_scores;
}

std::size_t save_model(const std::string& path, network& net, const model_metadata& meta) {
  detail::byte_writer out;
  write_metadata(out, meta);
  detail::write_network(net, out, true);
  return write_container(path, file_kind::model, out.bytes());
}

model load_model(const std::string& path) {
  model m;
  {  // the payload is freed before the packed network is compiled (peak memory: twice the weights)
    std::uint32_t version = 0;
    const auto payload = read_container(path, model_magic, "model", version);
    detail::byte_reader in(payload.data(), payload.size(), path);
    m.meta = read_metadata(in, version);
    m.net = detail::read_network(in, true);
    if (!in.done()) in.invalid("unexpected bytes after the last layer");
    if (m.net.input_size() != std::size_t{m.meta.width} * m.meta.height * m.meta.channels)
      in.invalid("first layer expects " + std::to_string(m.net.input_size()) + " inputs, the metadata describes " +
                 std::to_string(std::size_t{m.meta.width} * m.meta.height * m.meta.channels));
    check_values(m.net, in, "");
  }
  try {
    m.packed = std::make_unique<packed_network>(m.net);
  } catch (const error&) {  // not a BNN/QNN packed_network compiles: network::forward runs it
  }
  // What a model computes must be a number: one all-zero input (as preprocessed) through the network.
  if (m.net.input_size() <= (std::size_t{1} << 22)) {
    const runtime rt(1);
    matrix x(1, m.net.input_size());
    m.meta.preprocess.apply(x.data.data(), 1, x.cols, rt);
    for (float v : m.infer(x, rt).data)
      if (!std::isfinite(v)) throw error(path + ": the model's values make its scores non-finite");
    if (m.packed) m.packed->release_buffers();
  }
  return m;
}

std::size_t float32_parameter_bytes(network& net) {
  std::size_t bytes = 0;
  for (const auto& l : net.layers()) {
    const detail::weight_core* core = detail::layer_weights(*l);
    if (core != nullptr)
      bytes += core->inputs() * core->outputs() * sizeof(float);
    else
      for (parameter* p : l->parameters()) bytes += p->value.size() * sizeof(float);
    for (auto* b : l->buffers()) bytes += b->size() * sizeof(float);
  }
  return bytes;
}

namespace {

// The epoch history. From version 9 field by field; before, each epoch_metrics was stored as the bytes of
// the struct on x86-64 and AArch64 (80 bytes: epoch, eight doubles from offset 8, `best` at offset 72), which
// is parsed here by those offsets so that the struct may change without losing old checkpoints.
void write_epochs(detail::byte_writer& out, const std::vector<epoch_metrics>& epochs) {
  out.put<std::uint64_t>(epochs.size());
  for (const epoch_metrics& m : epochs) {
    out.put<std::uint64_t>(m.epoch);
    for (const double v : {m.loss, m.train_error, m.validation_error, m.test_error, m.test_error_packed, m.lr,
                           m.seconds, m.images_per_second})
      out.put<double>(v);
    out.put<std::uint8_t>(m.best);
  }
}

std::vector<epoch_metrics> read_epochs(detail::byte_reader& in, std::uint32_t version) {
  const auto count = in.get<std::uint64_t>("epoch history");
  if (count > setting_limits::epochs_max) in.invalid("epoch history of " + std::to_string(count) + " epochs");
  std::vector<epoch_metrics> epochs(count);
  for (epoch_metrics& m : epochs) {
    m.epoch = in.get<std::uint64_t>("epoch history");
    for (double* v : {&m.loss, &m.train_error, &m.validation_error, &m.test_error, &m.test_error_packed, &m.lr,
                      &m.seconds, &m.images_per_second})
      *v = in.get<double>("epoch history");
    m.best = in.get<std::uint8_t>("epoch history") != 0;
    if (version < 9)
      for (int pad = 0; pad < 7; ++pad) in.get<std::uint8_t>("epoch history");  // the struct's padding
  }
  return epochs;
}

}  // namespace

void save_checkpoint(const std::string& path, const checkpoint& c) {
  detail::byte_writer out;
  const train_config& k = c.config;
  out.put<std::uint32_t>(static_cast<std::uint32_t>(k.training_method));
  out.put<std::uint64_t>(k.epochs);
  out.put<std::uint64_t>(k.batch);
  out.put<float>(k.lr);
  out.put<float>(k.lr_decay);
  out.put<std::uint32_t>(static_cast<std::uint32_t>(k.optimizer));
  out.put<float>(k.momentum);
  out.put<std::uint32_t>(static_cast<std::uint32_t>(k.loss));
  out.put<std::uint64_t>(k.seed);
  out.put<std::uint64_t>(k.validation);
  out.put<std::int32_t>(k.qbp_kmin);
  out.put<std::int32_t>(k.qbp_kmax);
  out.put<std::uint32_t>(k.augment_shift);
  out.put<std::uint8_t>(k.augment_flip);
  out.put<std::uint64_t>(c.architecture.inputs());
  out.put_vector(std::vector<std::uint64_t>(c.architecture.hidden.begin(), c.architecture.hidden.end()));
  out.put<std::uint64_t>(c.architecture.outputs);
  out.put<std::uint32_t>(static_cast<std::uint32_t>(c.architecture.act));
  out.put<std::uint32_t>(c.architecture.height);
  out.put<std::uint32_t>(c.architecture.width);
  out.put<std::uint32_t>(c.architecture.channels);
  out.put_vector(std::vector<std::uint64_t>(c.architecture.conv.begin(), c.architecture.conv.end()));
  out.put<std::int32_t>(k.weight_bits);  // version 3: QNN bits, dropout, shift-based batch norm
  out.put<std::int32_t>(c.architecture.activation_bits);
  out.put<float>(c.architecture.dropout_input);
  out.put<float>(c.architecture.dropout_hidden);
  out.put<std::uint8_t>(c.architecture.shift_batch_norm);
  out.put<std::uint64_t>(k.bn_reestimate_examples);              // version 4: test-time batch-norm re-estimation
  out.put<std::uint8_t>(static_cast<std::uint8_t>(k.schedule));  // version 6: schedules and inits of issue 15
  out.put<float>(k.lr_end);
  out.put<std::uint8_t>(c.unscaled_binary_net);
  // version 7: kernel sizes, padding and Lin et al.'s pooled fan of the convolutions
  out.put_vector(std::vector<std::uint64_t>(c.architecture.conv_kernels.begin(), c.architecture.conv_kernels.end()));
  out.put<std::uint8_t>(c.architecture.conv_same_padding);
  out.put<std::uint8_t>(c.architecture.fan_out_per_pool);
  out.put<std::uint8_t>(k.qbp_authors);  // version 7: the authors' quantized-backprop rounding
  write_metadata(out, c.meta);
  write_states(out, c.state.network_state);
  write_states(out, c.state.optimizer_state);
  out.put<std::int64_t>(c.state.optimizer_steps);
  out.put<std::uint64_t>(c.state.step);
  out.put<std::uint64_t>(c.state.progress.best_epoch);
  out.put<double>(c.state.progress.best_validation_error);
  out.put<double>(c.state.progress.test_error_at_best);
  out.put<double>(c.state.progress.test_error_packed_at_best);
  out.put<double>(c.state.progress.total_seconds);
  write_epochs(out, c.state.progress.epochs);  // version 9: field by field (before: the struct's bytes)
  write_states(out, c.state.best_state);
  out.put<std::uint64_t>(c.state.train_examples);  // version 5: the run's training examples
  out.put<std::uint64_t>(k.batch_parts);           // version 8: parts of a minibatch (collective.hpp)
  write_container(path, file_kind::checkpoint, out.bytes());
}

checkpoint load_checkpoint(const std::string& path) {
  std::uint32_t version = 0;
  const auto payload = read_container(path, checkpoint_magic, "checkpoint", version);
  detail::byte_reader in(payload.data(), payload.size(), path);
  checkpoint c;
  train_config& k = c.config;
  const auto m = in.get<std::uint32_t>("method");
  if (m >= methods().size()) in.invalid("unknown method");
  k.training_method = static_cast<method>(m);
  k.epochs = in.get<std::uint64_t>("epochs");
  k.batch = in.get<std::uint64_t>("batch");
  k.lr = in.get<float>("lr");
  k.lr_decay = in.get<float>("lr decay");
  const auto opt = in.get<std::uint32_t>("optimizer");
  if (opt > static_cast<std::uint32_t>(optimizer_kind::shift_adamax)) in.invalid("unknown optimizer");
  k.optimizer = static_cast<optimizer_kind>(opt);
  k.momentum = in.get<float>("momentum");
  const auto loss = in.get<std::uint32_t>("loss");
  if (loss > 1) in.invalid("unknown loss");
  k.loss = static_cast<loss_kind>(loss);
  k.seed = in.get<std::uint64_t>("seed");
  k.validation = in.get<std::uint64_t>("validation size");
  k.qbp_kmin = in.get<std::int32_t>("qbp range");
  k.qbp_kmax = in.get<std::int32_t>("qbp range");
  if (version >= 2) {
    k.augment_shift = in.get<std::uint32_t>("augmentation shift");
    const auto flip = in.get<std::uint8_t>("augmentation flip");
    if (flip > 1 || k.augment_shift > 16) in.invalid("bad augmentation settings");
    k.augment_flip = flip != 0;
  }
  const auto inputs = in.get<std::uint64_t>("input size");
  const auto hidden = in.get_vector<std::uint64_t>("hidden sizes");
  c.architecture.hidden.assign(hidden.begin(), hidden.end());
  c.architecture.outputs = in.get<std::uint64_t>("output size");
  const auto act = in.get<std::uint32_t>("activation");
  if (act > static_cast<std::uint32_t>(activation::quantized)) in.invalid("unknown activation");
  c.architecture.act = static_cast<activation>(act);
  if (version >= 2) {
    c.architecture.height = in.get<std::uint32_t>("input height");
    c.architecture.width = in.get<std::uint32_t>("input width");
    c.architecture.channels = in.get<std::uint32_t>("input channels");
    const auto conv = in.get_vector<std::uint64_t>("convolution channels");
    c.architecture.conv.assign(conv.begin(), conv.end());
  } else {  // version 1: MLPs only, the input shape is the flat input size
    c.architecture.height = 1;
    c.architecture.width = static_cast<std::uint32_t>(std::min<std::uint64_t>(inputs, 1u << 30));
    c.architecture.channels = 1;
  }
  if (c.architecture.inputs() != inputs) in.invalid("input size does not match the input shape");
  if (version >= 3) {
    k.weight_bits = in.get<std::int32_t>("weight bits");
    c.architecture.activation_bits = in.get<std::int32_t>("activation bits");
    c.architecture.dropout_input = in.get<float>("input dropout");
    c.architecture.dropout_hidden = in.get<float>("hidden dropout");
    const auto shift = in.get<std::uint8_t>("shift batch-norm flag");
    if (shift > 1) in.invalid("bad shift batch-norm flag");
    c.architecture.shift_batch_norm = shift != 0;
  }
  // Runs of older versions evaluated with the running averages: resuming one keeps doing so.
  k.bn_reestimate_examples = version >= 4 ? in.get<std::uint64_t>("batch-norm re-estimation examples") : 0;
  // Older runs decayed per epoch to lr/100 and trained bnn/qnn without the Glorot step scale: resuming one
  // keeps doing so.
  k.schedule = lr_schedule::per_epoch_floor;
  c.unscaled_binary_net = true;
  if (version >= 6) {
    const auto schedule = in.get<std::uint8_t>("learning-rate schedule");
    if (schedule > static_cast<std::uint8_t>(lr_schedule::paper)) in.invalid("unknown learning-rate schedule");
    k.schedule = static_cast<lr_schedule>(schedule);
    k.lr_end = in.get<float>("final learning rate");
    const auto unscaled = in.get<std::uint8_t>("binary-net scale flag");
    if (unscaled > 1) in.invalid("bad binary-net scale flag");
    c.unscaled_binary_net = unscaled != 0;
  }
  if (version >= 7) {  // before: 3x3 "same" convolutions with the fan k^2 (in + out)
    const auto kernels = in.get_vector<std::uint64_t>("convolution kernel sizes");
    c.architecture.conv_kernels.assign(kernels.begin(), kernels.end());
    const auto same = in.get<std::uint8_t>("convolution padding flag");
    const auto pooled_fan = in.get<std::uint8_t>("convolution fan flag");
    if (same > 1 || pooled_fan > 1) in.invalid("bad convolution padding or fan flag");
    c.architecture.conv_same_padding = same != 0;
    c.architecture.fan_out_per_pool = pooled_fan != 0;
    const auto authors = in.get<std::uint8_t>("quantized-backprop rounding flag");
    if (authors > 1) in.invalid("bad quantized-backprop rounding flag");
    k.qbp_authors = authors != 0;
  }
  // The run's settings as the CLI's flags would be checked (a forged or damaged file cannot hold what
  // no flag can give, e.g. 2^63 epochs or a NaN learning rate).
  try {
    validate(k);
    validate(c.architecture);
  } catch (const error& e) {
    in.invalid(std::string("impossible training configuration: ") + e.what());
  }
  c.meta = read_metadata(in, version);
  c.state.network_state = read_states(in, "network state");
  c.state.optimizer_state = read_states(in, "optimizer state");
  c.state.optimizer_steps = in.get<std::int64_t>("optimizer steps");
  c.state.step = in.get<std::uint64_t>("step");
  c.state.progress.best_epoch = in.get<std::uint64_t>("best epoch");
  c.state.progress.best_validation_error = in.get<double>("best validation error");
  c.state.progress.test_error_at_best = in.get<double>("test error");
  c.state.progress.test_error_packed_at_best = in.get<double>("test error");
  c.state.progress.total_seconds = in.get<double>("seconds");
  c.state.progress.epochs = read_epochs(in, version);
  c.state.best_state = read_states(in, "best state");
  if (version >= 5) {
    c.state.train_examples = in.get<std::uint64_t>("training examples");
    if (c.state.train_examples > fewmul::setting_limits::examples_max)  // 0: unknown, as before version 5
      in.invalid("training example count " + std::to_string(c.state.train_examples) + " out of range");
  }
  if (version >= 8) {  // earlier runs summed each minibatch as one part
    k.batch_parts = in.get<std::uint64_t>("minibatch parts");
    if (k.batch_parts == 0 || k.batch_parts > std::min<std::uint64_t>(setting_limits::batch_parts_max, k.batch))
      in.invalid("minibatch part count " + std::to_string(k.batch_parts) + " out of range");
  }
  if (!in.done()) in.invalid("unexpected bytes at the end");
  // The state must hold exactly the architecture's values; checked before building the network, so a
  // lying architecture cannot make us allocate more than the file holds.
  double stored = 0, needed = 0;
  for (const auto& v : c.state.network_state) stored += static_cast<double>(v.size());
  try {
    needed = detail::state_values(detail::plan_network(c.architecture));
  } catch (const error& e) {
    in.invalid(std::string("impossible architecture: ") + e.what());
  }
  if (stored != needed) {
    // Counts as doubles: a lying architecture can need more values than a 64-bit integer holds.
    char message[128];
    std::snprintf(message, sizeof message, "state holds %.0f values, the architecture needs %.0f", stored, needed);
    in.invalid(message);
  }
  // Rebuilding checks that the states fit the architecture.
  network last, best;
  try {
    last = network_from_checkpoint(c, false);
    if (!c.state.best_state.empty()) best = network_from_checkpoint(c, true);
  } catch (const error& e) {
    in.invalid(std::string("state does not match its architecture: ") + e.what());
  }
  check_values(last, in, "");
  check_values(best, in, "best-epoch ");
  check_progress(c.state, k, in);
  return c;
}

network make_network(const checkpoint& c) {
  const auto& a = c.architecture;
  if (a.inputs() == 0 || a.inputs() > (1u << 26) || a.outputs == 0 || a.hidden.size() > 64 || a.conv.size() > 64 ||
      a.conv_kernels.size() > 64)
    throw error("implausible architecture");
  for (std::size_t h : a.hidden)
    if (h == 0 || h > (1u << 20)) throw error("implausible hidden width " + std::to_string(h));
  for (std::size_t ch : a.conv)
    if (ch > 65536) throw error("implausible channel count " + std::to_string(ch));
  dense_options options =
      dense_options_for(c.config.training_method, c.config.qbp_kmin, c.config.qbp_kmax, c.config.weight_bits);
  if (c.unscaled_binary_net && options.lr_scale == lr_scale_kind::binary_net) options.lr_scale = lr_scale_kind::none;
  if (c.config.qbp_authors) options.qbp_round = qbp_rounding::authors_dense;
  return make_network(a, options, c.config.seed);
}

network network_from_checkpoint(const checkpoint& c, bool best) {
  network net = make_network(c);
  const auto& state = best ? c.state.best_state : c.state.network_state;
  const auto reference = net.snapshot();
  if (state.size() != reference.size()) throw error("parameter count differs");
  for (std::size_t i = 0; i < state.size(); ++i)
    if (state[i].size() != reference[i].size()) throw error("parameter " + std::to_string(i) + " has the wrong size");
  net.restore(state);
  return net;
}

std::vector<std::string> check_output_path(const std::string& path, file_kind kind, const std::string& what) {
  namespace fs = std::filesystem;
  if (path.empty()) throw error(what + ": empty path");
  check_replaceable(path, kind, what);
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw error(what + " " + path + ": directory " + dir.string() + " does not exist");
  // Temporaries of runs that were killed: "<name>.tmp.<pid>.<random>" whose process is gone.
  std::vector<std::string> removed;
  const std::string prefix = target.filename().string() + ".tmp.";
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0 || !entry.is_regular_file(ec)) continue;
    const std::string rest = name.substr(prefix.size());
    const std::size_t dot = rest.find('.');
    if (dot == 0 || dot == std::string::npos || rest.find_first_not_of("0123456789") != dot) continue;
    const long pid = std::strtol(rest.substr(0, dot).c_str(), nullptr, 10);
    if (pid <= 0 || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)) {
      if (fs::remove(entry.path(), ec)) removed.push_back(entry.path().string());
    }
  }
  // Probe: create and remove a temporary where the real one will go, so an unwritable directory is
  // found now rather than after the work.
  const std::string probe = temp_name(path);
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw error(what + " " + path + ": cannot write in " + dir.string() + " (" + std::strerror(errno) + ")");
  ::close(fd);
  ::unlink(probe.c_str());
  return removed;
}

output_lock::output_lock(const std::string& path, const std::string& what) : lock_path_(path + ".lock") {
  // Lock a "<path>.lock" beside the file (the file itself is replaced by rename, a new inode each
  // time); retried when another run removed the lock file between our open and our flock.
  for (int attempt = 0; attempt < 100; ++attempt) {
    fd_ = ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw error(what + " " + path + ": cannot create the lock " + lock_path_ + " (" + std::strerror(errno) + ")");
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int e = errno;
      char owner[32] = {};
      const ssize_t n = ::pread(fd_, owner, sizeof owner - 1, 0);
      ::close(fd_);
      fd_ = -1;
      if (e == EWOULDBLOCK)
        throw error(what + " " + path + ": in use by another fewmul run" +
                    (n > 0 ? " (pid " + std::string(owner, static_cast<std::size_t>(n)) + ")" : std::string()) +
                    "; its lock is " + lock_path_);
      throw error(what + " " + path + ": cannot lock " + lock_path_ + " (" + std::strerror(e) + ")");
    }
    struct stat held {
    }, named{};
    if (::fstat(fd_, &held) == 0 && ::stat(lock_path_.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
        held.st_dev == named.st_dev) {
      const std::string pid = std::to_string(::getpid());
      if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
      }  // the pid is only for the message of a competing run
      return;
    }
    ::close(fd_);
    fd_ = -1;
  }
  throw error(what + " " + path + ": cannot lock " + lock_path_ + " (it keeps changing)");
}

output_lock::~output_lock() {
  if (fd_ < 0) return;
  ::unlink(lock_path_.c_str());  // while still holding the lock: a waiting run re-checks the inode
  ::close(fd_);
}

}  // namespace fewmul
