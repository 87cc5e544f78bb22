#pragma once
// Data-parallel training over several processes (engine/dist/README.md). The library needs no MPI: it sees
// the processes through this table of functions, which engine/dist implements once for a single process
// (here) and once over MPI (the fewmul_mpi library the CLI links when MPI is found).
//
// Why the bits do not depend on the number of processes: a training minibatch of B rows is cut into
// `parts` fixed parts (part p holds rows [p B / parts, (p + 1) B / parts)), a setting of the run like the
// batch size. Every sum over the minibatch (convolutions' weight gradients, batch-norm statistics and their
// gradients, the loss) is first summed within each part, as a single process sums today, and the parts'
// partial sums are then added in part order: s = (...((p_0 + p_1) + p_2) ...) + p_{parts-1}. Which process
// computed which part changes nothing of that expression, so one process and any number R <= parts of
// processes give the same bits. A dense layer's weight gradient is instead one product over the whole
// minibatch, as without parts: the processes gather each other's rows of its inputs and output gradient and
// each computes a slice of its outputs (gather_ranges, update_in_slices); every element is the same sum
// whoever computes it. Everything random is drawn from counters of the example's row in the whole minibatch
// (or of the part), never from the process.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fewmul {

/// The processes that train one model together, as a table of functions over an implementation's context.
struct collective {
  int rank = 0;  ///< this process, 0 .. size - 1; rank 0 writes files and prints
  int size = 1;  ///< number of processes
  void* context = nullptr;
  /// Every process passes the partial sums of its own parts (local_parts(parts, rank, size) of them,
  /// part-major, `count` floats each); every process receives in `out` the left fold over all `parts` in
  /// part order, p_0 + p_1 + ... + p_{parts-1}, one float addition at a time.
  void (*fold_parts)(void* context, const float* local, std::size_t parts, std::size_t count, float* out) = nullptr;
  /// Sums `count` integers over the processes, in place (exact, so in any order).
  void (*sum)(void* context, std::uint64_t* values, std::size_t count) = nullptr;
  /// Every process passes the blocks of its own parts (local_parts(parts, rank, size) of them, `bytes` each);
  /// every process receives all `parts` blocks in part order in `all`.
  void (*gather_parts)(void* context, const void* local, std::size_t parts, std::size_t bytes, void* all) = nullptr;
  /// Optional (null: none): where this process may write its parts' partials for the next fold_parts of
  /// `count` floats per part, memory fold_parts then reads without copying them (a node's shared memory);
  /// null when it has none. Called by every process at the same point, like the collectives.
  float* (*part_buffer)(void* context, std::size_t parts, std::size_t count) = nullptr;
  /// Every process passes its own range [offsets[rank], offsets[rank + 1]) of an array of offsets[size] bytes at
  /// `mine` (offsets: size + 1 of them); returns the whole array: `all` completed (where `mine` may lie), or the
  /// collective's own memory, readable until this process calls share_gradients. Required with size > 1.
  const void* (*gather_ranges)(void* context, const void* mine, const std::size_t* offsets, void* all) = nullptr;
  /// Optional (null: none): memory for a weight gradient whose fold the optimizer does in its update pass
  /// (batch_split::gradient_partials): `parts` x `count` floats, part-major, where every process writes its own
  /// parts and, after share_gradients, reads everyone's. The calls of one step get disjoint areas, valid until
  /// the next step's fold of its loss. null when it has none. Called by every process alike.
  float* (*gradient_parts)(void* context, std::size_t parts, std::size_t count) = nullptr;
  /// Optional, with gradient_parts: called by every process once per training step, before its optimizer reads
  /// the gradient parts (a barrier: every process has written its own); the step's next calls of gradient_parts
  /// and gather_ranges get memory anew.
  void (*share_gradients)(void* context) = nullptr;
};

/// A weight gradient the optimizer folds over the parts in its update pass: the partials of all `parts` parts
/// of the minibatch lie at `partials`, the gradient's size apart; `grad` is the parameter's gradient it stands for.
struct deferred_gradient {
  const float* grad = nullptr;
  const float* partials = nullptr;
  std::size_t parts = 1;
  /// Computed in slices (update_in_slices): process r holds elements [slices[r], slices[r + 1]) (size + 1
  /// offsets) and updates only those; the others' stay stale in its copy until the optimizer gathers them.
  const std::size_t* slices = nullptr;
};

/// The first part of process `rank` when `parts` parts are spread over `size` processes in contiguous runs.
inline std::size_t first_part(std::size_t parts, int rank, int size) {
  return parts * static_cast<std::size_t>(rank) / static_cast<std::size_t>(size);
}
/// The number of parts of process `rank`.
inline std::size_t local_parts(std::size_t parts, int rank, int size) {
  return first_part(parts, rank + 1, size) - first_part(parts, rank, size);
}
/// The first row of part `part` of a minibatch of `rows` rows cut into `parts` parts.
inline std::size_t part_begin(std::size_t rows, std::size_t parts, std::size_t part) { return rows * part / parts; }

/// The one process of a run without MPI.
collective& single_process();

/// Where the rows of one process lie in a training minibatch: what step_context::split tells the layers.
struct batch_split {
  collective* comm = nullptr;
  std::size_t parts = 1;       ///< parts of the whole minibatch
  std::size_t first_part = 0;  ///< this process's first part
  std::size_t first_row = 0;   ///< row of the whole minibatch that is this process's row 0
  std::size_t batch_rows = 0;  ///< rows of the whole minibatch
  /// This process's parts as local rows: part first_part + i is [bounds[i], bounds[i + 1]).
  std::vector<std::size_t> bounds;
  std::size_t local_parts() const { return bounds.size() - 1; }
  /// True when this process holds the whole minibatch as one part (no folding, no communication).
  bool whole() const { return parts == 1 && comm->size == 1; }
  /// Where to write the local parts' partials (part-major, `count` each) for the next fold(): the collective's
  /// own memory when it offers some (no copy in fold), else `scratch`.
  float* partials_for_fold(std::size_t count, std::vector<float>& scratch) const {
    if (comm->part_buffer != nullptr)
      if (float* buffer = comm->part_buffer(comm->context, parts, count)) return buffer;
    scratch.resize(local_parts() * count);
    return scratch.data();
  }
  /// Left fold of the local parts' partials (part-major, `count` each) with those of the other processes.
  void fold(const float* local, std::size_t count, float* out) const {
    comm->fold_parts(comm->context, local, parts, count, out);
  }

  /// Set by a trainer whose optimizer folds weight gradients in its update pass (optimizer::step).
  bool defer_gradient_folds = false;
  /// This step's weight gradients left to the optimizer, in the order the layers wrote them.
  mutable std::vector<deferred_gradient> deferred;
  /// Where to write the local parts' partials (part-major, `count` each) of the weight gradient `grad`. When all
  /// parts will be readable here (one process, or the collective's gradient_parts) and the trainer defers, the
  /// fold is left to the optimizer: the gradient is recorded in `deferred` and fold_gradient() does nothing.
  float* gradient_partials(const float* grad, std::size_t count, std::vector<float>& scratch) const {
    if (defer_gradient_folds && comm->size == 1) {
      scratch.resize(parts * count);
      deferred.push_back({grad, scratch.data(), parts});
      return scratch.data();
    }
    if (defer_gradient_folds && comm->gradient_parts != nullptr)
      if (float* all = comm->gradient_parts(comm->context, parts, count)) {
        deferred.push_back({grad, all, parts});
        return all + first_part * count;
      }
    return partials_for_fold(count, scratch);
  }
  /// A weight gradient `grad` that the processes compute in slices (a dense layer's, over the whole minibatch),
  /// this process's being elements [slices[rank], slices[rank + 1]) (`slices` must outlive the step). When the trainer
  /// defers, the optimizer updates only this slice (recorded in `deferred`: true is returned, and the layer takes the
  /// others' weights from them); else (false) gather_ranges must complete `grad` for every process to update all of it.
  bool update_in_slices(const float* grad, const std::size_t* slices) const {
    if (!defer_gradient_folds) return false;
    deferred.push_back({grad, grad, 1, slices});
    return true;
  }
  /// Whether the gradient `grad` was left to the optimizer this step.
  bool fold_deferred(const float* grad) const { return !deferred.empty() && deferred.back().grad == grad; }
};

}  // namespace fewmul
