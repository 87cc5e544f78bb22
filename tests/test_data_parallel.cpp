// Data-parallel training (collective.hpp, issue 19) without MPI: R "processes" are threads of this test, joined
// by a collective that folds the parts' partial sums in part order as the MPI one does. Every process must end
// with the bits of the single-process run with the same minibatch parts, for any R <= parts.
#include <doctest/doctest.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <cstring>
#include <thread>

#include "fewmul/train.hpp"
#include "test_support.hpp"

using namespace fewmul;
using namespace fewmul_test;

namespace {

// Threads as processes: each puts its parts' partials into a shared buffer, then every one folds all of them.
// A barrier on a mutex and a condition variable: std::barrier's spinning wait made no progress under
// qemu-user (the AArch64 CI run) and idled natively.
class simple_barrier {
 public:
  explicit simple_barrier(int count) : count_(count) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const std::uint64_t generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      released_.notify_all();
      return;
    }
    released_.wait(lock, [&] { return generation_ != generation; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable released_;
  int count_, arrived_ = 0;
  std::uint64_t generation_ = 0;
};

class thread_group {
 public:
  explicit thread_group(int size) : size_(size), sync_(size), members_(static_cast<std::size_t>(size)) {
    for (int r = 0; r < size; ++r) {
      member& m = members_[static_cast<std::size_t>(r)];
      m.group = this;
      m.table = collective{r, size, &m, fold, sum, gather};
      m.table.gather_ranges = gather_ranges;
    }
  }
  collective* process(int rank) { return &members_[static_cast<std::size_t>(rank)].table; }

 private:
  struct member {
    thread_group* group = nullptr;
    collective table;
  };
  static void fold(void* context, const float* local, std::size_t parts, std::size_t count, float* out) {
    auto& m = *static_cast<member*>(context);
    thread_group& g = *m.group;
    const int rank = m.table.rank;
    if (rank == 0) g.floats_.assign(parts * count, 0.0f);
    g.sync_.arrive_and_wait();
    std::copy_n(local, local_parts(parts, rank, g.size_) * count,
                g.floats_.data() + first_part(parts, rank, g.size_) * count);
    g.sync_.arrive_and_wait();
    std::copy_n(g.floats_.data(), count, out);
    for (std::size_t p = 1; p < parts; ++p)
      for (std::size_t i = 0; i < count; ++i) out[i] += g.floats_[p * count + i];
    g.sync_.arrive_and_wait();
  }
  static void sum(void* context, std::uint64_t* values, std::size_t count) {
    auto& m = *static_cast<member*>(context);
    thread_group& g = *m.group;
    if (m.table.rank == 0) g.integers_.assign(static_cast<std::size_t>(g.size_) * count, 0);
    g.sync_.arrive_and_wait();
    std::copy_n(values, count, g.integers_.data() + static_cast<std::size_t>(m.table.rank) * count);
    g.sync_.arrive_and_wait();
    for (std::size_t i = 0; i < count; ++i) {
      values[i] = 0;
      for (int r = 0; r < g.size_; ++r) values[i] += g.integers_[static_cast<std::size_t>(r) * count + i];
    }
    g.sync_.arrive_and_wait();
  }

  static void gather(void* context, const void* local, std::size_t parts, std::size_t bytes, void* all) {
    auto& m = *static_cast<member*>(context);
    thread_group& g = *m.group;
    const int rank = m.table.rank;
    if (rank == 0) g.bytes_.assign(parts * bytes, 0);
    g.sync_.arrive_and_wait();
    const std::size_t local_bytes = local_parts(parts, rank, g.size_) * bytes;
    if (local_bytes > 0)  // a process may hold no parts; memcpy must not see its null pointer then
      std::memcpy(g.bytes_.data() + first_part(parts, rank, g.size_) * bytes, local, local_bytes);
    g.sync_.arrive_and_wait();
    if (parts * bytes > 0) std::memcpy(all, g.bytes_.data(), parts * bytes);
    g.sync_.arrive_and_wait();
  }

  static const void* gather_ranges(void* context, const void* mine, const std::size_t* offsets, void* all) {
    auto& m = *static_cast<member*>(context);
    thread_group& g = *m.group;
    const auto rank = static_cast<std::size_t>(m.table.rank), size = static_cast<std::size_t>(g.size_);
    if (rank == 0) g.bytes_.assign(offsets[size], 0);
    g.sync_.arrive_and_wait();
    std::memmove(g.bytes_.data() + offsets[rank], mine, offsets[rank + 1] - offsets[rank]);
    g.sync_.arrive_and_wait();
    std::memcpy(all, g.bytes_.data(), offsets[size]);
    g.sync_.arrive_and_wait();
    return all;
  }

  int size_;
  simple_barrier sync_;
  std::vector<member> members_;
  std::vector<float> floats_;
  std::vector<std::uint64_t> integers_;
  std::vector<unsigned char> bytes_;
};

// 6x6x2 images whose class is the sign pattern of two random projections.
dataset images(std::size_t n, std::uint32_t seed) {
  dataset d;
  d.height = 6;
  d.width = 6;
  d.channels = 2;
  d.features = 72;
  d.classes = 4;
  d.x = random_floats(n * d.features, seed);
  const auto u = random_floats(d.features, 1000), v = random_floats(d.features, 1001);
  for (std::size_t i = 0; i < n; ++i) {
    double a = 0, b = 0;
    for (std::size_t f = 0; f < d.features; ++f) {
      a += u[f] * d.x[i * d.features + f];
      b += v[f] * d.x[i * d.features + f];
    }
    d.y.push_back(static_cast<std::uint8_t>((a > 0) * 2 + (b > 0)));
  }
  return d;
}

struct run_setup {
  method m = method::bc_qbp;
  bool convnet = false;
  std::size_t parts = 3;
  int threads = 1;
};

// `d`'s rows borrowed, not copied: as the processes of a node share one copy of the data (engine/dist).
dataset borrowing(dataset& d) {
  dataset view = d;
  view.x.clear();
  view.borrowed_x = d.x.data();
  return view;
}

// The snapshot of every process after training on `processes` processes (one entry for a plain run). The
// processes read one copy of the data, as those of one node do.
std::vector<std::vector<std::vector<float>>> train_on(const run_setup& s, int processes) {
  dataset train_rows = images(430, 1), test_rows = images(60, 2);
  const dataset train_set = processes == 0 ? train_rows : borrowing(train_rows);
  const dataset test_set = processes == 0 ? test_rows : borrowing(test_rows);
  network_architecture arch;
  arch.height = 6;
  arch.width = 6;
  arch.channels = 2;
  if (s.convnet) arch.conv = {4, 0};
  arch.hidden = {24, 20};
  arch.outputs = 4;
  arch.act = default_activation(s.m);
  arch.dropout_hidden = 0.2f;
  arch.shift_batch_norm = s.m == method::bnn;  // and shift-based batch norm (its second variance pass)
  train_config config;
  config.training_method = s.m;
  config.epochs = 2;
  config.batch = 40;  // 3 parts of 13, 13 and 14 rows
  config.batch_parts = s.parts;
  config.threads = s.threads;
  config.validation = 50;
  config.bn_reestimate_examples = 100;
  config.seed = 7;
  config.optimizer = s.m == method::bnn ? optimizer_kind::adam : optimizer_kind::sgd;
  config.augment_shift = s.convnet ? 1 : 0;
  config.augment_flip = s.convnet;
  std::vector<std::vector<std::vector<float>>> snapshots(static_cast<std::size_t>(std::max(1, processes)));
  auto run = [&](collective* process, std::size_t slot) {
    network net = make_network(arch, dense_options_for(s.m), 5);
    train(net, train_set, test_set, config, {}, nullptr, process);
    snapshots[slot] = net.snapshot();
  };
  if (processes == 0) {
    run(nullptr, 0);
    return snapshots;
  }
  thread_group group(processes);
  std::vector<std::thread> threads;
  for (int r = 0; r < processes; ++r) threads.emplace_back(run, group.process(r), static_cast<std::size_t>(r));
  for (auto& t : threads) t.join();
  return snapshots;
}

}  // namespace

TEST_CASE("data-parallel training on 1, 2 and 3 processes is bit-identical to one process") {
  for (method m : {method::fp32, method::bc_qbp, method::tc, method::bnn}) {
    for (bool convnet : {false, true}) {
      CAPTURE(method_name(m));
      CAPTURE(convnet);
      const run_setup setup{m, convnet};
      const auto single = train_on(setup, 0).front();
      for (int processes : {1, 2, 3})
        for (const auto& process : train_on(setup, processes)) {
          CAPTURE(processes);
          CHECK(process == single);
        }
    }
  }
}

TEST_CASE("minibatch parts keep the result independent of the thread count") {
  run_setup one{method::bc_qbp, true, 3, 1}, two{method::bc_qbp, true, 3, 2};
  CHECK(train_on(one, 0) == train_on(two, 0));
}

TEST_CASE("minibatch parts change the sums and so the bits, one part gives the run without parts") {
  run_setup three{method::fp32, false, 3}, one_part{method::fp32, false, 1};
  const auto single = train_on(one_part, 0).front();
  CHECK(train_on(three, 0).front() != single);
  CHECK(train_on(one_part, 1).front() == single);  // one process of a job, one part: the plain run
}

TEST_CASE("more processes than minibatch parts are refused before training") {
  thread_group group(1);
  collective four = *group.process(0);
  four.size = 4;
  const dataset data = images(100, 3);
  network net = make_mlp(72, {8}, 4, dense_options_for(method::fp32), activation::relu, 1);
  train_config config;
  config.batch = 20;
  config.batch_parts = 3;
  config.validation = 20;
  CHECK_THROWS_WITH_AS(train(net, data, data, config, {}, nullptr, &four),
                       doctest::Contains("--batch-parts 3 is fewer than the 4 processes"), error);
  config.batch_parts = 21;
  CHECK_THROWS_WITH_AS(train(net, data, data, config), doctest::Contains("--batch-parts"), error);
}

TEST_CASE("processes holding different data are refused before training") {
  const dataset test_set = images(60, 2);
  train_config config;
  config.batch = 20;
  config.batch_parts = 2;
  config.validation = 20;
  config.epochs = 1;
  thread_group group(2);
  std::string messages[2];
  auto run = [&](int rank) {
    const dataset train_set = images(100, rank == 0 ? 1 : 4);  // process 1 read another file
    network net = make_mlp(72, {8}, 4, dense_options_for(method::fp32), activation::relu, 1);
    try {
      train(net, train_set, test_set, config, {}, nullptr, group.process(rank));
    } catch (const error& e) {
      messages[rank] = e.what();
    }
  };
  std::thread other(run, 1);
  run(0);
  other.join();
  for (const std::string& m : messages) CHECK(m.find("process 1 of 2 holds other training/test data") == 0);
}
