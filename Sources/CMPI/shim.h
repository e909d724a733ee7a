// Open MPI from Debian's libopenmpi-dev, found through pkg-config `ompi-c`.
//
// MPI's handles (the world communicator, datatypes, operations) are macros over addresses of
// Open MPI's globals, which Swift cannot import: these functions hand them over.
#include <mpi.h>

static inline MPI_Comm strata_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Errhandler strata_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline MPI_Datatype strata_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Datatype strata_mpi_int32(void) { return MPI_INT32_T; }
static inline MPI_Datatype strata_mpi_int64(void) { return MPI_INT64_T; }
static inline MPI_Datatype strata_mpi_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Datatype strata_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype strata_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Op strata_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op strata_mpi_min(void) { return MPI_MIN; }
static inline MPI_Op strata_mpi_max(void) { return MPI_MAX; }
static inline int strata_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int strata_mpi_success(void) { return MPI_SUCCESS; }
static inline int strata_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline void *strata_mpi_in_place(void) { return MPI_IN_PLACE; }
