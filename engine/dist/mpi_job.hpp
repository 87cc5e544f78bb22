#pragma once
// The MPI job a CLI process belongs to (the fewmul_mpi library; see README.md). This header does not include
// mpi.h: only mpi_job.cpp does, so nothing else of fewmul builds against MPI.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fewmul/collective.hpp"
#include "fewmul/data.hpp"

namespace fewmul::dist {

/// Joins the MPI job (MPI_Init_thread, once) when an MPI launcher such as mpirun started this process, and
/// returns its collective; null when no launcher did (the plain single-process run, without MPI at all).
/// MPI_Finalize runs at exit.
collective* join_mpi_job();

/// Ends a multi-process job after an error on this process: prints "fewmul: error: rank r of R: <message>"
/// to stderr and calls MPI_Abort with `exit_code`, so that the launcher stops every process instead of
/// leaving them waiting in a collective. Returns (printing nothing) when this process is not in a job.
void abort_job(const std::string& message, int exit_code);

/// How many processes of the job share this process's node (1 outside a job): a process's fair share of
/// the node's cores is hardware threads / this.
int processes_on_this_node();

/// True on the first process of this node (node rank 0, the one that loads data for the node), and outside a
/// job. World rank 0 is always the first of its node.
bool first_on_node();

/// A block of memory that every process of this node maps (MPI-3 shared memory: MPI_Win_allocate_shared on
/// the node's communicator); it lives until exit.
struct node_block {
  std::byte* data = nullptr;  ///< this process's address of the block
  std::size_t bytes = 0;
};
/// Collective over the processes of this node: the first process gives the size (`bytes`; the others' value
/// is ignored, they learn it) and every process receives the block. Processes waiting for the first one sleep
/// instead of spinning, so that it may use the node's cores meanwhile (loading and preprocessing).
node_block allocate_on_node(std::size_t bytes);
/// Waits, sleeping, until every process of this node has arrived; what the first process wrote into a
/// node_block before it arrived is then visible to all.
void node_barrier();

/// Collective over the processes of this node: holds `sets` once per node. The first process passes its
/// datasets, loaded (owned rows); the others pass as many datasets, whatever they hold. Afterwards every
/// process's datasets have the first one's shapes and labels and borrow their rows (dataset::borrowed_x) from
/// one copy in a node_block; the first process's own rows moved there. Only the first process may write
/// them (preprocessing in place), followed by a node_barrier() before anyone reads. Returns the block's size.
std::size_t share_on_node(const std::vector<dataset*>& sets);

/// The memory of one process, from /proc/self/status (0 where not known).
struct memory_use {
  std::uint64_t private_bytes = 0;   ///< RssAnon: resident memory no other process maps
  std::uint64_t resident_bytes = 0;  ///< VmRSS: all resident memory, shared pages included
};
/// Collective over the job: every process's memory_use, by rank (to every process).
std::vector<memory_use> memory_of_processes();

/// What the collectives of this process did so far.
struct traffic {
  std::uint64_t calls = 0;
  std::uint64_t bytes_sent = 0;      ///< payload bytes this process handed to MPI to send
  std::uint64_t bytes_received = 0;  ///< payload bytes it received from the others
  double seconds = 0;                ///< wall time inside collectives, waiting for slower processes included
};
traffic job_traffic();

}  // namespace fewmul::dist
