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

#else
// Built without oneTBB (the AArch64 build under qemu, the ThreadSanitizer build): each parallel_for
// starts a team of std::threads that take tasks from an atomic counter. Slower to start than an
// arena, but every synchronization is visible to ThreadSanitizer.
struct runtime::arena {
  explicit arena(int) {}
};
#endif

runtime::runtime(int threads) {
  if (threads < 0) throw error("thread count must be >= 1 (or 0 for all hardware threads), got " + std::to_string(threads));
#if FEWMUL_USE_TBB
  threads_ = threads == 0 ? tbb::info::default_concurrency() : threads;
#else
  threads_ = threads == 0 ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) : threads;
#endif
  arena_ = std::make_unique<arena>(threads_);
}

runtime::~runtime() = default;

void runtime::parallel_for(std::size_t tasks, const std::function<void(std::size_t)>& body) const {
  if (tasks == 0) return;
  if (tasks == 1 || threads_ == 1) {
    for (std::size_t t = 0; t < tasks; ++t) body(t);
    return;
  }
#if !FEWMUL_USE_TBB
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_lock;
  auto work = [&] {
    try {
      for (std::size_t t; (t = next.fetch_add(1)) < tasks;) body(t);
    } catch (...) {
      const std::lock_guard<std::mutex> hold(failure_lock);
      if (!failure) failure = std::current_exception();
      next.store(tasks);
    }
  };
  std::vector<std::thread> team;
  for (std::size_t i = 1; i < std::min<std::size_t>(static_cast<std::size_t>(threads_), tasks); ++i) team.emplace_back(work);
  work();
  for (auto& t : team) t.join();
  if (failure) std::rethrow_exception(failure);
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
