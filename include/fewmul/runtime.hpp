#pragma once
#include <cstddef>
#include <type_traits>
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
  /// A non-owning reference to a callable taking a task index, valid for the call it is passed to. A
  /// std::function around a capturing lambda allocates on every call; this never does.
  class task_function {
   public:
    template <class F, class = std::enable_if_t<!std::is_same_v<std::remove_cvref_t<F>, task_function>>>
    task_function(F&& f)  // NOLINT: implicit, so that a lambda can be passed as it is
        : object_(const_cast<void*>(static_cast<const void*>(&f))),
          call_([](void* object, std::size_t task) { (*static_cast<std::remove_reference_t<F>*>(object))(task); }) {}
    void operator()(std::size_t task) const { call_(object_, task); }

   private:
    void* object_;
    void (*call_)(void*, std::size_t);
  };
  /// Runs body(task) for every task in [0, tasks), in parallel. Each task writes only its own outputs
  /// and every output's value is fixed by the task that writes it, so results are the same whatever the
  /// number of threads.
  void parallel_for(std::size_t tasks, task_function body) const;

 private:
  int threads_;
  struct arena;
  std::unique_ptr<arena> arena_;
};

}  // namespace fewmul
