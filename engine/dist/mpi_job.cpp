// The collective of collective.hpp over MPI, and the job's life: joining, aborting on an error, a watchdog.
//
// fold_parts must give every process the left fold p_0 + p_1 + ... + p_{N-1} of the N parts' partial sums,
// in part order, whichever process holds which part. MPI_Allreduce cannot promise an order (nor the same
// order on every process), so the fold is done by fewmul from the partials themselves:
// * small vectors (batch-norm statistics, the loss): MPI_Allgatherv of every part's partial, then each
//   process folds all N in order (one round; N * count floats received);
// * large ones (weight gradients): element slice s of the vector belongs to rank s. MPI_Alltoallv sends
//   every part's slice s to rank s, which folds its slice over the N parts in order, and MPI_Allgatherv
//   hands the folded slices to all. With one part per process that is the traffic of a ring allreduce,
//   2 (R - 1) / R of the vector's bytes sent and received per process, and each process adds only 1/R of
//   the elements; with more parts per process, every part's slice travels (N / R parts, not one sum).
// The additions are the ones a single process makes (collective.cpp), one float add at a time in part
// order, so any number of processes gives its bits.
#include "dist/mpi_job.hpp"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fewmul/error.hpp"

namespace fewmul::dist {
namespace {

// Vectors of at most this many floats over all parts are gathered whole (one round trip, not two).
constexpr std::size_t gather_whole_limit = 1 << 14;

struct mpi_state {
  collective table;
  traffic stats;
  std::vector<float> send, receive;
  std::vector<int> send_counts, send_offsets, receive_counts, receive_offsets;
  // Watchdog: when a collective was entered (steady-clock nanoseconds), 0 outside collectives.
  std::atomic<std::int64_t> entered{0};
  double timeout_seconds = 300;
  MPI_Comm node = MPI_COMM_NULL;  // the processes of this node (MPI_COMM_TYPE_SHARED)
  int node_rank = 0, node_size = 1;
  std::vector<MPI_Win> node_windows;  // the node_blocks, in a passive-target epoch until exit
  // fold_parts through shared memory when the whole job is on one node: two buffers used in turn.
  struct fold_buffer {
    MPI_Win window = MPI_WIN_NULL;
    float* base = nullptr;
    std::size_t capacity = 0;  // floats
  };
  bool shared_fold = false;
  fold_buffer fold_buffers[2];
  unsigned next_fold_buffer = 0;
  // collective::gradient_parts and gather_ranges: a step's blocks, handed out in call order (next_step_block).
  std::vector<fold_buffer> step_blocks;
  std::size_t next_step_block = 0;
};
mpi_state* state = nullptr;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw error(std::string(call) + " failed: " + std::string(text, static_cast<std::size_t>(length)));
}

int as_count(std::size_t n) {
  if (n > static_cast<std::size_t>(INT_MAX))
    throw error("a collective of " + std::to_string(n) + " floats is too large for MPI");
  return static_cast<int>(n);
}

// Times a collective and arms the watchdog for its duration.
class timed_call {
 public:
  timed_call() : start_(now_ns()) {
    ++state->stats.calls;
    state->entered.store(start_);
  }
  ~timed_call() {
    state->entered.store(0);
    state->stats.seconds += static_cast<double>(now_ns() - start_) * 1e-9;
  }
  timed_call(const timed_call&) = delete;
  timed_call& operator=(const timed_call&) = delete;

 private:
  std::int64_t start_;
};

// Waits for a nonblocking call by testing it every millisecond: a process waiting long (for the first process
// of its node to load the data) leaves the cores to the others instead of polling.
void wait_sleeping(MPI_Request& request, const char* call) {
  for (;;) {
    int done = 0;
    check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), call);
    if (done != 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// out = in_0 + in_1 + ... + in_{parts-1}, vectors of `count` floats `stride` apart, added in order.
// The first two parts in one pass (no copy of the first: a pass over the vector less, the same additions).
void fold_in_order(const float* in, std::size_t parts, std::size_t count, std::size_t stride, float* out) {
  if (parts == 1) {
    std::copy_n(in, count, out);
    return;
  }
  for (std::size_t i = 0; i < count; ++i) out[i] = in[i] + in[stride + i];
  for (std::size_t p = 2; p < parts; ++p)
    for (std::size_t i = 0; i < count; ++i) out[i] += in[p * stride + i];
}

// A window of `bytes` on the node's communicator that every process maps: the first allocates it, the others
// query its address. Open in a passive-target epoch (MPI_Win_lock_all) until freed, so that MPI_Win_sync
// orders plain loads and stores around barriers (the MPI-3 idiom for shared windows).
void* allocate_shared(mpi_state& s, std::size_t bytes, MPI_Win& window) {
  const auto mine = static_cast<MPI_Aint>(s.node_rank == 0 ? std::max<std::size_t>(bytes, 1) : 0);
  void* base = nullptr;
  check(MPI_Win_allocate_shared(mine, 1, MPI_INFO_NULL, s.node, &base, &window), "MPI_Win_allocate_shared");
  MPI_Aint length = 0;
  int unit = 0;
  check(MPI_Win_shared_query(window, 0, &length, &unit, &base), "MPI_Win_shared_query");
  check(MPI_Win_lock_all(MPI_MODE_NOCHECK, window), "MPI_Win_lock_all");
  return base;
}

void free_shared(MPI_Win& window) {
  if (window == MPI_WIN_NULL) return;
  MPI_Win_unlock_all(window);
  MPI_Win_free(&window);
}

// Every process of the node has arrived, and what each stored in the `count` buffers before is visible to all.
void shared_barrier(mpi_state& s, const mpi_state::fold_buffer* buffers, std::size_t count = 1) {
  for (std::size_t i = 0; i < count; ++i) check(MPI_Win_sync(buffers[i].window), "MPI_Win_sync");
  check(MPI_Barrier(s.node), "MPI_Barrier");
  for (std::size_t i = 0; i < count; ++i) check(MPI_Win_sync(buffers[i].window), "MPI_Win_sync");
}

// fold_parts when every process of the job is on this node: no messages. Each process stores its parts'
// partials in a shared buffer, folds its slice of the elements over all parts into the buffer's output area,
// and copies the whole output out: the reduce-scatter and all-gather of the message path without MPI's copies
// through its own buffers (and no copy in where the layer wrote its partials there: part_buffer), and the same
// additions in the same order. Small vectors, and few parts on few processes (one barrier): every process folds all
// elements itself. Two buffers used in turn make one barrier per call enough between a process's reads of a buffer and
// anyone's next writes into it: a process writes into a buffer again only after the barrier of the call in between,
// which every process reaches after its reads. The buffer the next shared fold of `parts` x `count` floats uses, grown
// if needed (collective: every process asks for the same sizes in the same order, so all grow at the same call).
// Grows a node-shared buffer to at least `floats` floats (collective: every process grows it at the same call).
mpi_state::fold_buffer& with_capacity(mpi_state& s, mpi_state::fold_buffer& b, std::size_t floats) {
  if (floats > b.capacity) {
    free_shared(b.window);
    b.base = static_cast<float*>(allocate_shared(s, floats * sizeof(float), b.window));
    b.capacity = floats;
  }
  return b;
}

mpi_state::fold_buffer& next_fold_buffer(mpi_state& s, std::size_t parts, std::size_t count) {
  // every part's partial, then the folded vector
  return with_capacity(s, s.fold_buffers[s.next_fold_buffer], (parts + 1) * count);
}

// collective::part_buffer: the layers write their partials straight into the next shared fold buffer.
float* part_buffer(void* context, std::size_t parts, std::size_t count) {
  auto& s = *static_cast<mpi_state*>(context);
  if (!s.shared_fold) return nullptr;
  const mpi_state::fold_buffer& b = s.fold_buffers[s.next_fold_buffer];
  if ((parts + 1) * count > b.capacity) {  // growing is collective: under the watchdog like the folds
    timed_call timer;
    next_fold_buffer(s, parts, count);
  }
  return b.base + first_part(parts, s.table.rank, s.table.size) * count;
}

// The node's shared memory of one step, for collective::gradient_parts and gather_ranges: each call of a step gets
// its own block (allocated the first time: a collective call, which every process makes with the same sizes in the
// same order), and the next step's calls the same blocks again. A gather's block is read right after its barrier,
// gradient parts up to the optimizer; a forward-pass block is written again after the optimizer's share_gradients,
// a backward-pass block after the next step's loss fold (a collective, trainer.cpp), which every process reaches
// only after its own reads: no process writes a block again before all have read it (engine/dist/README.md).
mpi_state::fold_buffer& next_step_block(mpi_state& s, std::size_t floats) {
  if (s.next_step_block == s.step_blocks.size()) s.step_blocks.emplace_back();
  mpi_state::fold_buffer& b = s.step_blocks[s.next_step_block++];
  if (floats <= b.capacity) return b;
  timed_call timer;  // growing is collective: under the watchdog like the folds
  return with_capacity(s, b, floats);
}

// collective::gradient_parts: a weight gradient whose fold the optimizer does, every part of it in a step block.
float* gradient_parts(void* context, std::size_t parts, std::size_t count) {
  auto& s = *static_cast<mpi_state*>(context);
  if (!s.shared_fold) return nullptr;
  float* base = next_step_block(s, parts * count).base;
  const std::size_t mine = local_parts(parts, s.table.rank, s.table.size) * count;  // what the others read of it
  s.stats.bytes_sent += mine * sizeof(float) * static_cast<std::size_t>(s.table.size - 1);
  s.stats.bytes_received += (parts * count - mine) * sizeof(float);
  return base;
}

// collective::share_gradients: the step's gradient parts are written; after the barrier every process reads them.
void share_gradients(void* context) {
  auto& s = *static_cast<mpi_state*>(context);
  timed_call timer;
  shared_barrier(s, s.step_blocks.data(), s.next_step_block);
  s.next_step_block = 0;
}

// collective::gather_ranges: on one node through a step block (each process copies its range in, a barrier, all
// read it there), else MPI_Allgatherv in place.
const void* gather_ranges(void* context, const void* mine, const std::size_t* offsets, void* all) {
  auto& s = *static_cast<mpi_state*>(context);
  const int size = s.table.size;
  const auto rank = static_cast<std::size_t>(s.table.rank), ranks = static_cast<std::size_t>(size);
  const std::size_t my_bytes = offsets[rank + 1] - offsets[rank];
  s.stats.bytes_sent += my_bytes * (ranks - 1);
  s.stats.bytes_received += offsets[ranks] - offsets[0] - my_bytes;
  if (s.shared_fold) {
    mpi_state::fold_buffer& b = next_step_block(s, (offsets[ranks] + sizeof(float) - 1) / sizeof(float));
    auto* base = reinterpret_cast<unsigned char*>(b.base);
    if (my_bytes > 0) std::memcpy(base + offsets[rank], mine, my_bytes);
    timed_call timer;
    shared_barrier(s, &b);
    return base;
  }
  timed_call timer;
  auto* bytes = static_cast<unsigned char*>(all);
  if (bytes + offsets[rank] != mine && my_bytes > 0) std::memmove(bytes + offsets[rank], mine, my_bytes);
  s.receive_counts.resize(ranks);
  s.receive_offsets.resize(ranks);
  for (std::size_t q = 0; q < ranks; ++q) {
    s.receive_counts[q] = as_count(offsets[q + 1] - offsets[q]);
    s.receive_offsets[q] = as_count(offsets[q]);
  }
  check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_BYTE, all, s.receive_counts.data(), s.receive_offsets.data(), MPI_BYTE,
                       MPI_COMM_WORLD),
        "MPI_Allgatherv");
  return all;
}

void fold_parts_shared(mpi_state& s, const float* local, std::size_t parts, std::size_t count, float* out) {
  const int size = s.table.size, rank = s.table.rank;
  const auto ranks = static_cast<std::size_t>(size);
  mpi_state::fold_buffer& b = next_fold_buffer(s, parts, count);
  s.next_fold_buffer ^= 1u;
  float* partials = b.base;
  float* folded = b.base + parts * count;
  const std::size_t mine = local_parts(parts, rank, size);
  float* my_partials = partials + first_part(parts, rank, size) * count;
  if (local != my_partials) std::copy_n(local, mine * count, my_partials);  // unless written there (part_buffer)
  shared_barrier(s, &b);
  // Every process folding all elements reads (parts + 1) count floats and writes count; folding a slice and
  // copying the result out reads about (parts + 1) count / R + 2 count and needs a second barrier. For two
  // processes on two or three parts (the usual split of a node), folding all is the lighter.
  if (parts * count <= gather_whole_limit || (parts + 1) * (ranks - 1) <= 2 * ranks) {
    fold_in_order(partials, parts, count, count, out);
    s.stats.bytes_sent += mine * count * sizeof(float) * (ranks - 1);
    s.stats.bytes_received += (parts - mine) * count * sizeof(float);
    return;
  }
  const std::size_t my_begin = count * static_cast<std::size_t>(rank) / ranks;
  const std::size_t my_length = count * static_cast<std::size_t>(rank + 1) / ranks - my_begin;
  fold_in_order(partials + my_begin, parts, my_length, count, folded + my_begin);
  shared_barrier(s, &b);
  std::copy_n(folded, count, out);
  s.stats.bytes_sent += (mine * (count - my_length) + my_length * (ranks - 1)) * sizeof(float);
  s.stats.bytes_received += ((parts - mine) * my_length + (count - my_length)) * sizeof(float);
}

void fold_parts(void* context, const float* local, std::size_t parts, std::size_t count, float* out) {
  auto& s = *static_cast<mpi_state*>(context);
  const int size = s.table.size, rank = s.table.rank;
  const auto ranks = static_cast<std::size_t>(size);
  timed_call timer;
  if (s.shared_fold) {
    fold_parts_shared(s, local, parts, count, out);
    return;
  }
  s.send_counts.resize(ranks);
  s.send_offsets.resize(ranks);
  s.receive_counts.resize(ranks);
  s.receive_offsets.resize(ranks);
  const std::size_t mine = local_parts(parts, rank, size);
  if (parts * count <= gather_whole_limit) {
    for (int q = 0; q < size; ++q) {
      s.receive_counts[static_cast<std::size_t>(q)] = as_count(local_parts(parts, q, size) * count);
      s.receive_offsets[static_cast<std::size_t>(q)] = as_count(first_part(parts, q, size) * count);
    }
    s.receive.resize(parts * count);
    check(MPI_Allgatherv(local, as_count(mine * count), MPI_FLOAT, s.receive.data(), s.receive_counts.data(),
                         s.receive_offsets.data(), MPI_FLOAT, MPI_COMM_WORLD),
          "MPI_Allgatherv");
    s.stats.bytes_sent += mine * count * sizeof(float) * (ranks - 1);
    s.stats.bytes_received += (parts - mine) * count * sizeof(float);
    fold_in_order(s.receive.data(), parts, count, count, out);
    return;
  }
  // Slice q = [count q / R, count (q + 1) / R) of the elements is folded by rank q.
  auto slice_begin = [&](int q) { return count * static_cast<std::size_t>(q) / ranks; };
  const std::size_t my_begin = slice_begin(rank), my_length = slice_begin(rank + 1) - my_begin;
  const float* send = local;
  if (mine > 1) {  // lay out every local part's slice q together, destination by destination
    s.send.resize(mine * count);
    float* to = s.send.data();
    for (int q = 0; q < size; ++q) {
      const std::size_t b = slice_begin(q), n = slice_begin(q + 1) - b;
      for (std::size_t i = 0; i < mine; ++i, to += n) std::copy_n(local + i * count + b, n, to);
    }
    send = s.send.data();
  }
  for (int q = 0; q < size; ++q) {
    const auto u = static_cast<std::size_t>(q);
    const std::size_t n = slice_begin(q + 1) - slice_begin(q);
    s.send_counts[u] = as_count(mine * n);
    s.send_offsets[u] = as_count(mine * slice_begin(q));
    s.receive_counts[u] = as_count(local_parts(parts, q, size) * my_length);
    s.receive_offsets[u] = as_count(first_part(parts, q, size) * my_length);
  }
  s.receive.resize(parts * my_length);
  check(MPI_Alltoallv(send, s.send_counts.data(), s.send_offsets.data(), MPI_FLOAT, s.receive.data(),
                      s.receive_counts.data(), s.receive_offsets.data(), MPI_FLOAT, MPI_COMM_WORLD),
        "MPI_Alltoallv");
  // The received slices lie in part order: ranks in order, each with its parts in order.
  fold_in_order(s.receive.data(), parts, my_length, my_length, out + my_begin);
  for (int q = 0; q < size; ++q) {
    s.receive_counts[static_cast<std::size_t>(q)] = as_count(slice_begin(q + 1) - slice_begin(q));
    s.receive_offsets[static_cast<std::size_t>(q)] = as_count(slice_begin(q));
  }
  check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, out, s.receive_counts.data(), s.receive_offsets.data(), MPI_FLOAT,
                       MPI_COMM_WORLD),
        "MPI_Allgatherv");
  s.stats.bytes_sent += (mine * (count - my_length) + my_length * (ranks - 1)) * sizeof(float);
  s.stats.bytes_received += ((parts - mine) * my_length + (count - my_length)) * sizeof(float);
}

void sum(void* context, std::uint64_t* values, std::size_t count) {
  auto& s = *static_cast<mpi_state*>(context);
  timed_call timer;
  check(MPI_Allreduce(MPI_IN_PLACE, values, as_count(count), MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  s.stats.bytes_sent += count * sizeof(std::uint64_t);
  s.stats.bytes_received += count * sizeof(std::uint64_t);
}

void gather_parts(void* context, const void* local, std::size_t parts, std::size_t bytes, void* all) {
  auto& s = *static_cast<mpi_state*>(context);
  const int size = s.table.size, rank = s.table.rank;
  timed_call timer;
  s.receive_counts.resize(static_cast<std::size_t>(size));
  s.receive_offsets.resize(static_cast<std::size_t>(size));
  for (int q = 0; q < size; ++q) {
    s.receive_counts[static_cast<std::size_t>(q)] = as_count(local_parts(parts, q, size) * bytes);
    s.receive_offsets[static_cast<std::size_t>(q)] = as_count(first_part(parts, q, size) * bytes);
  }
  const std::size_t mine = local_parts(parts, rank, size) * bytes;
  check(MPI_Allgatherv(local, as_count(mine), MPI_BYTE, all, s.receive_counts.data(), s.receive_offsets.data(),
                       MPI_BYTE, MPI_COMM_WORLD),
        "MPI_Allgatherv");
  s.stats.bytes_sent += mine * static_cast<std::size_t>(size - 1);
  s.stats.bytes_received += parts * bytes - mine;
}

bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

// A process waiting in a collective longer than the timeout (another one hangs or died unseen) ends itself;
// the launcher then stops the others. _exit, not MPI_Abort: this thread may not call MPI.
void watch(mpi_state* s) {
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const std::int64_t entered = s->entered.load();
    if (entered == 0 || static_cast<double>(now_ns() - entered) * 1e-9 < s->timeout_seconds) continue;
    std::fprintf(stderr,
                 "fewmul: error: rank %d of %d: waited %.0f s in a collective for another process "
                 "(FEWMUL_MPI_TIMEOUT); ending the job\n",
                 s->table.rank, s->table.size, s->timeout_seconds);
    std::fflush(stderr);
    _exit(1);
  }
}

}  // namespace

collective* join_mpi_job() {
  if (state != nullptr) return &state->table;
  if (!launched_by_mpi()) return nullptr;
  // Open MPI polls for messages without yielding the core unless it sees more processes than cores. With
  // R x T = cores, threads of other programs or a process's own helper threads, a spinning waiter takes the
  // core from the very process it waits for: MNIST MLP, 2 processes x 1 thread on the 2-core AMD EPYC
  // (Zen 5) with other work running, 946 images/s polling, 4972 yielding. A value the user set wins.
  setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
  int provided = 0;
  check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  // Errors come back as codes that check() turns into fewmul::error, which the CLI reports and ends the job with.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  state = new mpi_state;  // lives until exit: the watchdog thread reads it
  MPI_Comm_rank(MPI_COMM_WORLD, &state->table.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &state->table.size);
  // Key 0: the node's processes keep their world order, so world rank 0 is the first of its node.
  check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &state->node),
        "MPI_Comm_split_type");
  MPI_Comm_set_errhandler(state->node, MPI_ERRORS_RETURN);
  MPI_Comm_rank(state->node, &state->node_rank);
  MPI_Comm_size(state->node, &state->node_size);
  state->table.context = state;
  state->table.fold_parts = fold_parts;
  state->table.sum = sum;
  state->table.gather_parts = gather_parts;
  state->table.part_buffer = part_buffer;
  state->table.gather_ranges = gather_ranges;
  state->table.gradient_parts = gradient_parts;
  state->table.share_gradients = share_gradients;
  if (const char* timeout = std::getenv("FEWMUL_MPI_TIMEOUT")) state->timeout_seconds = std::atof(timeout);
  // One node: folds through shared memory; FEWMUL_MPI_SHARED_FOLD=0 keeps the message path of several nodes
  // (tests/mpi/run.sh runs both; bench/mpi_scaling.sh compares them).
  const char* shared_fold = std::getenv("FEWMUL_MPI_SHARED_FOLD");
  state->shared_fold = state->node_size == state->table.size && state->table.size > 1 &&
                       (shared_fold == nullptr || std::string(shared_fold) != "0");
  if (state->table.size > 1 && state->timeout_seconds > 0) std::thread(watch, state).detach();
  std::atexit([] {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    for (MPI_Win& window : state->node_windows) free_shared(window);
    for (auto& buffer : state->fold_buffers) free_shared(buffer.window);
    for (auto& block : state->step_blocks) free_shared(block.window);
    MPI_Finalize();
  });
  return &state->table;
}

void abort_job(const std::string& message, int exit_code) {
  if (state == nullptr) return;
  std::fprintf(stderr, "fewmul: error: rank %d of %d: %s\n", state->table.rank, state->table.size, message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
}

int processes_on_this_node() { return state != nullptr ? state->node_size : 1; }

bool first_on_node() { return state == nullptr || state->node_rank == 0; }

node_block allocate_on_node(std::size_t bytes) {
  if (state == nullptr) throw error("allocate_on_node outside an MPI job");
  std::uint64_t size = bytes;
  MPI_Request request;
  check(MPI_Ibcast(&size, 1, MPI_UINT64_T, 0, state->node, &request), "MPI_Ibcast");
  wait_sleeping(request, "MPI_Ibcast");
  MPI_Win window = MPI_WIN_NULL;
  void* base = allocate_shared(*state, static_cast<std::size_t>(size), window);
  state->node_windows.push_back(window);
  return {static_cast<std::byte*>(base), static_cast<std::size_t>(size)};
}

void node_barrier() {
  if (state == nullptr) return;
  for (MPI_Win window : state->node_windows) check(MPI_Win_sync(window), "MPI_Win_sync");
  MPI_Request request;
  check(MPI_Ibarrier(state->node, &request), "MPI_Ibarrier");
  wait_sleeping(request, "MPI_Ibarrier");
  for (MPI_Win window : state->node_windows) check(MPI_Win_sync(window), "MPI_Win_sync");
}

std::vector<memory_use> memory_of_processes() {
  memory_use mine;
  if (std::FILE* status = std::fopen("/proc/self/status", "r")) {
    char line[256];
    unsigned long long kib = 0;
    while (std::fgets(line, sizeof line, status) != nullptr) {
      if (std::sscanf(line, "RssAnon: %llu kB", &kib) == 1) mine.private_bytes = kib * 1024;
      if (std::sscanf(line, "VmRSS: %llu kB", &kib) == 1) mine.resident_bytes = kib * 1024;
    }
    std::fclose(status);
  }
  if (state == nullptr) return {mine};
  std::vector<memory_use> all(static_cast<std::size_t>(state->table.size));
  check(MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, MPI_COMM_WORLD),
        "MPI_Allgather");
  return all;
}

traffic job_traffic() { return state != nullptr ? state->stats : traffic{}; }

}  // namespace fewmul::dist
