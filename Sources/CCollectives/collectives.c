#include "collectives.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ev_mpi_launched(void) {
  static const char *variables[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", NULL};
  for (int i = 0; variables[i]; i++) {
    if (getenv(variables[i])) return 1;
  }
  return 0;
}

static int report(int code, const char *what, char *error, size_t error_length) {
  if (code == MPI_SUCCESS) return 0;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    snprintf(text, sizeof text, "code %d", code);
  if (error && error_length) snprintf(error, error_length, "%s failed: %s", what, text);
  return code;
}

int ev_mpi_init(int *rank, int *size, char *error, size_t error_length) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    int code = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (code != MPI_SUCCESS) return report(code, "MPI_Init_thread", error, error_length);
  }
  // Errors come back to the caller, which names the operation and aborts the job.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int code = MPI_Comm_rank(MPI_COMM_WORLD, rank);
  if (code == MPI_SUCCESS) code = MPI_Comm_size(MPI_COMM_WORLD, size);
  return report(code, "MPI_Comm_rank/size", error, error_length);
}

void ev_mpi_finalize(void) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void ev_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

// Values are exchanged in segments of this many elements, so the receive buffer stays small
// however large the model is.
enum { SEGMENT = 1 << 22 };

#define ORDERED_ALLREDUCE(NAME, TYPE, MPI_TYPE)                                               \
  int NAME(TYPE *values, int64_t count, char *error, size_t error_length) {                   \
    int rank = 0, size = 1;                                                                   \
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);                                                     \
    MPI_Comm_size(MPI_COMM_WORLD, &size);                                                     \
    if (size == 1 || count == 0) return 0;                                                    \
    int *counts = malloc(sizeof(int) * 4 * (size_t)size);                                     \
    TYPE *received = malloc(sizeof(TYPE) * ((size_t)(SEGMENT / size + 1) * (size_t)size));    \
    if (!counts || !received) {                                                               \
      free(counts);                                                                           \
      free(received);                                                                         \
      snprintf(error, error_length, "all-reduce: out of memory");                             \
      return 1;                                                                               \
    }                                                                                         \
    int *offsets = counts + size, *receiveCounts = counts + 2 * size,                         \
        *receiveOffsets = counts + 3 * size;                                                  \
    int code = MPI_SUCCESS;                                                                   \
    for (int64_t start = 0; start < count && code == MPI_SUCCESS; start += SEGMENT) {         \
      int n = (int)(count - start < SEGMENT ? count - start : SEGMENT);                       \
      /* Slice c of the segment goes to rank c, which sums it over every rank. */             \
      for (int c = 0; c < size; c++) {                                                        \
        int lower = (int)((int64_t)n * c / size), upper = (int)((int64_t)n * (c + 1) / size); \
        offsets[c] = lower;                                                                   \
        counts[c] = upper - lower;                                                            \
      }                                                                                       \
      int mine = counts[rank];                                                                \
      for (int s = 0; s < size; s++) {                                                        \
        receiveCounts[s] = mine;                                                              \
        receiveOffsets[s] = s * mine;                                                         \
      }                                                                                       \
      TYPE *segment = values + start;                                                         \
      code = MPI_Alltoallv(segment, counts, offsets, MPI_TYPE, received, receiveCounts,       \
                           receiveOffsets, MPI_TYPE, MPI_COMM_WORLD);                         \
      if (code != MPI_SUCCESS) break;                                                         \
      TYPE *slice = segment + offsets[rank];                                                  \
      for (int i = 0; i < mine; i++) slice[i] = received[i];                                  \
      for (int s = 1; s < size; s++) {                                                        \
        const TYPE *from = received + (size_t)s * (size_t)mine;                               \
        for (int i = 0; i < mine; i++) slice[i] += from[i];                                   \
      }                                                                                       \
      code = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, segment, counts, offsets,     \
                            MPI_TYPE, MPI_COMM_WORLD);                                        \
    }                                                                                         \
    free(counts);                                                                             \
    free(received);                                                                           \
    return report(code, "all-reduce", error, error_length);                                   \
  }

ORDERED_ALLREDUCE(ev_mpi_allreduce_ordered_f32, float, MPI_FLOAT)
ORDERED_ALLREDUCE(ev_mpi_allreduce_ordered_f64, double, MPI_DOUBLE)

int ev_mpi_allgather_u64(uint64_t value, uint64_t *out, char *error, size_t error_length) {
  int code = MPI_Allgather(&value, 1, MPI_UINT64_T, out, 1, MPI_UINT64_T, MPI_COMM_WORLD);
  return report(code, "all-gather", error, error_length);
}

int ev_mpi_barrier(char *error, size_t error_length) {
  return report(MPI_Barrier(MPI_COMM_WORLD), "barrier", error, error_length);
}
