// Test-time batch-norm re-estimation: the exact population statistics of every batch-norm layer's input
// under the weights inference runs with.
//
// Why: training keeps running averages of batch statistics gathered under the *sampled* weights of
// stochastic methods; at test time the network runs E[Wb] or the deterministic sign/ternary weights, whose
// pre-activations have other means and variances. BinaryConnect recomputes them over the training data
// before every evaluation (hantek/BinaryConnect, trainer.py set_BN_mean_var / set_mean_var with
// BN_fast_eval=False, layer.py BN_updates): for each layer k in order, every batch is run forward with
// the test-time weights and the earlier layers' recomputed statistics, and layer k's statistics are
// accumulated. We follow that exact, layer-by-layer variant (its fast variant normalizes with the
// partial averages gathered so far, which makes the result depend on the batch order), with two
// differences: the variance is the population variance of all the values (the authors average the
// per-batch variances, which leaves out the spread of the batch means), and the data are a fixed
// prefix of the training set rather than train + validation.
#include <algorithm>
#include <cstring>
#include <vector>

#include "fewmul/error.hpp"
#include "fewmul/train.hpp"
#include "layers/layer_io.hpp"

namespace fewmul {
namespace {

// Examples per forward chunk (as evaluate()'s batch) and channels per parallel task. Both are fixed,
// so the order of every sum, hence the result, does not depend on the thread count.
constexpr std::size_t chunk_examples = 1000;
constexpr std::size_t channel_block = 64;

// The inputs of one chunk of examples at some depth: the output of layer `position` (-1: none kept,
// start from the data).
struct chunk_cache {
  matrix values;
  std::ptrdiff_t position = -1;
};

// Population mean and variance per channel, merged chunk by chunk in chunk order with Chan et al.'s
// pairwise update (exact in double precision up to rounding, stable when the mean dominates).
struct population {
  double count = 0;
  std::vector<double> mean, m2;
};

// Per channel f of `x` (rows x positions x channels values, channel-last): mean and sum of squared
// deviations from it over the chunk's rows * positions values, in double. With `shift` and
// `global_mean`: instead the sum of d * AP2(d), d = x - global_mean (shift batch norm's variance).
void chunk_moments(const matrix& x, std::size_t channels, std::size_t positions, const runtime& rt,
                   const double* global_mean, bool shift, std::vector<double>& mean, std::vector<double>& m2) {
  const std::size_t values = x.rows * positions;
  mean.assign(channels, 0.0);
  m2.assign(channels, 0.0);
  const float* v = x.data.data();
  const std::size_t blocks = (channels + channel_block - 1) / channel_block;
  rt.parallel_for(blocks, [&](std::size_t b) {
    const std::size_t f0 = b * channel_block, f1 = std::min(channels, f0 + channel_block);
    if (global_mean == nullptr) {
      for (std::size_t r = 0; r < values; ++r)
        for (std::size_t f = f0; f < f1; ++f) mean[f] += v[r * channels + f];
      for (std::size_t f = f0; f < f1; ++f) mean[f] /= static_cast<double>(values);
    }
    const double* centre = global_mean != nullptr ? global_mean : mean.data();
    for (std::size_t r = 0; r < values; ++r)
      for (std::size_t f = f0; f < f1; ++f) {
        const double d = static_cast<double>(v[r * channels + f]) - centre[f];
        m2[f] += shift ? d * static_cast<double>(ap2(static_cast<float>(d))) : d * d;
      }
  });
}

}  // namespace

void reestimate_batch_norm(network& net, const dataset& data, const runtime& rt, bool expected_weights,
                           std::size_t examples, std::size_t cache_bytes, collective* processes) {
  if (data.features != net.input_size())
    throw error("batch-norm re-estimation: data has " + std::to_string(data.features) +
                " features, the network expects " + std::to_string(net.input_size()));
  const std::size_t n = examples == 0 ? data.size() : std::min(examples, data.size());
  if (n == 0) throw error("batch-norm re-estimation needs at least one example");
  const step_context ctx{.rt = rt,
                         .kernels = kernels::active_kernels(),
                         .seed = 0,
                         .step = 0,
                         .training = false,
                         .expected_weights = expected_weights};
  const auto& layers = net.layers();
  const std::size_t chunks = (n + chunk_examples - 1) / chunk_examples;
  // Processes of a data-parallel run (collective.hpp) each take a contiguous run of the chunks and share the
  // chunks' moments, which every process then merges in chunk order: the single-process arithmetic.
  collective& comm = processes != nullptr ? *processes : single_process();
  const std::size_t mine_begin = first_part(chunks, comm.rank, comm.size);
  const std::size_t mine_end = first_part(chunks, comm.rank + 1, comm.size);
  std::vector<double> local, shared;
  // The moments of every chunk, [count, mean[channels], m2[channels]] each (`block` doubles), local ones
  // computed by `compute(j, out)`.
  auto all_chunks = [&](std::size_t block, auto&& compute) -> const double* {
    local.resize((mine_end - mine_begin) * block);
    for (std::size_t j = mine_begin; j < mine_end; ++j) compute(j, local.data() + (j - mine_begin) * block);
    if (comm.size == 1) return local.data();
    shared.resize(chunks * block);
    comm.gather_parts(comm.context, local.data(), chunks, block * sizeof(double), shared.data());
    return shared.data();
  };
  std::vector<chunk_cache> cache(chunks);
  std::size_t cached_bytes = 0;
  matrix a, b;

  // The input of layer `stage` for chunk j: from the chunk's cached activations (or the data), through
  // the layers in between, in inference mode. Batch norms before `stage` already hold their new
  // statistics, so each layer sees what it will see at test time.
  auto input_of = [&](std::size_t stage, std::size_t j) -> const matrix& {
    chunk_cache& c = cache[j];
    const matrix* current = &c.values;
    std::size_t next = static_cast<std::size_t>(c.position + 1);
    if (c.position < 0) {
      const std::size_t first = j * chunk_examples, count = std::min(chunk_examples, n - first);
      a.resize(count, data.features);
      std::memcpy(a.data.data(), data.example(first), count * data.features * sizeof(float));
      current = &a;
      next = 0;
    }
    for (std::size_t l = next; l < stage; ++l) {
      matrix& out = current == &a ? b : a;
      layers[l]->forward(*current, out, ctx);
      current = &out;
    }
    return *current;
  };

  for (std::size_t stage = 0; stage < layers.size(); ++stage) {
    std::size_t channels = 0, positions = 0;
    bool shift = false;
    if (!detail::batch_norm_shape(*layers[stage], channels, positions, shift)) continue;
    population p;
    p.mean.assign(channels, 0.0);
    p.m2.assign(channels, 0.0);
    std::vector<double> mean, m2;
    const std::size_t block = 1 + 2 * channels;
    const double* moments = all_chunks(block, [&](std::size_t j, double* out) {
      const matrix& x = input_of(stage, j);
      chunk_moments(x, channels, positions, rt, nullptr, false, mean, m2);
      out[0] = static_cast<double>(x.rows * positions);
      std::copy(mean.begin(), mean.end(), out + 1);
      std::copy(m2.begin(), m2.end(), out + 1 + channels);
      // Keep this depth's inputs for the next stage while the budget allows (a cached chunk gives the
      // bits a recomputed one would: the same layers on the same rows).
      chunk_cache& c = cache[j];
      if (stage > 0 && &x != &c.values) {
        const std::size_t old_bytes = c.values.data.size() * sizeof(float), new_bytes = x.data.size() * sizeof(float);
        if (cached_bytes - old_bytes + new_bytes <= cache_bytes) {
          c.values = x;
          c.position = static_cast<std::ptrdiff_t>(stage) - 1;
          cached_bytes = cached_bytes - old_bytes + new_bytes;
        }
      }
    });
    for (std::size_t j = 0; j < chunks; ++j) {
      const double* chunk = moments + j * block;
      const double nb = chunk[0], na = p.count, total = na + nb;
      for (std::size_t f = 0; f < channels; ++f) {
        const double delta = chunk[1 + f] - p.mean[f];
        p.mean[f] += delta * (nb / total);
        p.m2[f] += chunk[1 + channels + f] + delta * delta * (na * nb / total);
      }
      p.count = total;
    }
    if (shift) {  // Algorithm 3's variance sums C * AP2(C): a second pass about the population mean
      std::fill(p.m2.begin(), p.m2.end(), 0.0);
      const double* sums = all_chunks(channels, [&](std::size_t j, double* out) {
        chunk_moments(input_of(stage, j), channels, positions, rt, p.mean.data(), true, mean, m2);
        std::copy(m2.begin(), m2.end(), out);
      });
      for (std::size_t j = 0; j < chunks; ++j)
        for (std::size_t f = 0; f < channels; ++f) p.m2[f] += sums[j * channels + f];
    }
    std::vector<float> new_mean(channels), new_var(channels);
    for (std::size_t f = 0; f < channels; ++f) {
      new_mean[f] = static_cast<float>(p.mean[f]);
      new_var[f] = static_cast<float>(std::max(0.0, p.m2[f] / p.count));
    }
    detail::set_batch_norm_statistics(*layers[stage], std::move(new_mean), std::move(new_var), expected_weights);
  }
}

void clear_expected_batch_norm(network& net) {
  for (const auto& l : net.layers()) detail::clear_expected_batch_norm_statistics(*l);
}

}  // namespace fewmul
