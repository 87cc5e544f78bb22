#pragma once
// The MPI job a CLI process belongs to (the fewmul_mpi library; see README.md). This header does not include
// mpi.h: only mpi_job.cpp does, so nothing else of fewmul builds against MPI.
#include <cstdint>
#include <string>

#include "fewmul/collective.hpp"

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

/// What the collectives of this process did so far.
struct traffic {
  std::uint64_t calls = 0;
  std::uint64_t bytes_sent = 0;      ///< payload bytes this process handed to MPI to send
  std::uint64_t bytes_received = 0;  ///< payload bytes it received from the others
  double seconds = 0;                ///< wall time inside collectives, waiting for slower processes included
};
traffic job_traffic();

}  // namespace fewmul::dist
