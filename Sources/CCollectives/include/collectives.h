#ifndef EV_COLLECTIVES_H
#define EV_COLLECTIVES_H

#include <stddef.h>
#include <stdint.h>

// The few MPI operations a data-parallel step needs, behind plain C types: Swift cannot import
// Open MPI's handle macros (MPI_COMM_WORLD is `&ompi_mpi_comm_world`). Every function returns 0
// on success, or writes a one-line message into `error` and returns nonzero.

/// Whether this process was started by an MPI launcher (mpirun, or srun with PMI/PMIx).
int ev_mpi_launched(void);

/// MPI_Init_thread (funneled); errors are returned, not fatal.
int ev_mpi_init(int *rank, int *size, char *error, size_t error_length);

void ev_mpi_finalize(void);

/// Ends every rank of the job (MPI_Abort).
void ev_mpi_abort(int code);

/// Sums `values` over all ranks into every rank's `values`, always in rank order
/// (v₀ + v₁ + … + v_{N−1}), so the result does not depend on the algorithm MPI picks: each
/// rank sums one slice from every rank (all-to-all), then the slices are gathered
/// (reduce-scatter + all-gather, the bandwidth of a ring all-reduce).
int ev_mpi_allreduce_ordered_f32(float *values, int64_t count, char *error, size_t error_length);
int ev_mpi_allreduce_ordered_f64(double *values, int64_t count, char *error, size_t error_length);

/// Every rank's `value`, in rank order, into `out` (one per rank).
int ev_mpi_allgather_u64(uint64_t value, uint64_t *out, char *error, size_t error_length);

int ev_mpi_barrier(char *error, size_t error_length);

#endif
