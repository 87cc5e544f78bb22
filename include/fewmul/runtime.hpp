#pragma once
#include <cstddef>
#include <functional>
#include <memory>

namespace fewmul {

/// Owns the one oneTBB task_arena that every layer runs its parallel work in (built with
/// FEWMUL_USE_TBB=OFF: a team of std::threads per parallel_for instead).
class runtime {
 public:
  /// `threads` = 0 uses every hardware thread; otherwise exactly that many (>= 1).
  explicit runtime(int threads = 0);
  ~runtime();
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  /// Number of threads of the arena.
  int threads() const { return threads_; }
  /// Runs body(task) for every task in [0, tasks), in parallel. Callers split work into a number of
  /// tasks that does not depend on the thread count, and each task writes only its own outputs, so
  /// results are the same whatever the number of threads.
  void parallel_for(std::size_t tasks, const std::function<void(std::size_t)>& body) const;

 private:
  int threads_;
  struct arena;
  std::unique_ptr<arena> arena_;
};

}  // namespace fewmul
