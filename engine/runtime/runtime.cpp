#include "fewmul/runtime.hpp"

#if FEWMUL_USE_TBB
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>
#else
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>
#endif

#include <algorithm>
#include <string>

#include "fewmul/error.hpp"

namespace fewmul {

#if FEWMUL_USE_TBB
struct runtime::arena {
  // More threads than cores (e.g. 16 on a 2-core machine) must really run on that many threads, as
  // the thread-count determinism checks ask; TBB caps workers at the core count unless told otherwise.
  std::unique_ptr<tbb::global_control> allow;
  tbb::task_arena value;
  explicit arena(int threads)
      : allow(threads > tbb::info::default_concurrency()
                  ? std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                          static_cast<std::size_t>(threads))
                  : nullptr),
        value(threads) {}
};

#elif FEWMUL_STD_THREADS
// Built without oneTBB (the ThreadSanitizer build): a team of threads-1 std::threads, started once, that every
// parallel_for wakes; tasks come from an atomic counter and the caller takes part. Every synchronization is a mutex or
// condition variable that ThreadSanitizer sees.
thread_local bool in_team_task = false;  // nested parallel_for calls run serially (no deadlock)

struct runtime::arena {
  std::vector<std::thread> team;
  std::mutex lock;
  std::condition_variable wake, done;
  const task_function* body = nullptr;
  std::size_t tasks = 0, generation = 0, finished = 0;
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  bool stop = false;

  explicit arena(int threads) {
    for (int i = 1; i < threads; ++i) team.emplace_back([this] { serve(); });
  }
  ~arena() {
    {
      const std::lock_guard<std::mutex> hold(lock);
      stop = true;
    }
    wake.notify_all();
    for (auto& t : team) t.join();
  }
  void work(const task_function& f, std::size_t n) {
    try {
      for (std::size_t t; (t = next.fetch_add(1)) < n;) f(t);
    } catch (...) {
      const std::lock_guard<std::mutex> hold(lock);
      if (!failure) failure = std::current_exception();
      next.store(n);
    }
  }
  void serve() {
    in_team_task = true;
    std::size_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> hold(lock);
      wake.wait(hold, [&] { return stop || generation != seen; });
      if (stop) return;
      seen = generation;
      const auto* f = body;
      const std::size_t n = tasks;
      hold.unlock();
      work(*f, n);
      hold.lock();
      if (++finished == team.size()) done.notify_one();
    }
  }
  void run(std::size_t n, const task_function& f) {
    if (in_team_task) {
      for (std::size_t t = 0; t < n; ++t) f(t);
      return;
    }
    in_team_task = true;
    struct reset {
      ~reset() { in_team_task = false; }
    } leave;
    {
      const std::lock_guard<std::mutex> hold(lock);
      body = &f;
      tasks = n;
      next.store(0);
      finished = 0;
      failure = nullptr;
      ++generation;
    }
    wake.notify_all();
    work(f, n);
    std::unique_lock<std::mutex> hold(lock);
    done.wait(hold, [&] { return finished == team.size(); });
    if (failure) std::rethrow_exception(failure);
  }
};
#else
struct runtime::arena {  // built without threads (AArch64 under qemu-user): tasks run in order
  explicit arena(int) {}
};
#endif

runtime::runtime(int threads) {
  if (threads < 0)
    throw error("thread count must be >= 1 (or 0 for all hardware threads), got " + std::to_string(threads));
#if FEWMUL_USE_TBB
  threads_ = threads == 0 ? tbb::info::default_concurrency() : threads;
#else
  threads_ = threads == 0 ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) : threads;
#endif
  arena_ = std::make_unique<arena>(threads_);
}

runtime::~runtime() = default;

void runtime::parallel_for(std::size_t tasks, task_function body) const {
  if (tasks == 0) return;
  if (tasks == 1 || threads_ == 1) {
    for (std::size_t t = 0; t < tasks; ++t) body(t);
    return;
  }
#if FEWMUL_STD_THREADS
  arena_->run(tasks, body);
#elif !FEWMUL_USE_TBB
  for (std::size_t t = 0; t < tasks; ++t) body(t);
#else
  arena_->value.execute([&] {
    tbb::parallel_for(
        tbb::blocked_range<std::size_t>(0, tasks, 1),
        [&](const tbb::blocked_range<std::size_t>& range) {
          for (std::size_t t = range.begin(); t != range.end(); ++t) body(t);
        },
        tbb::simple_partitioner());
  });
#endif
}

}  // namespace fewmul
