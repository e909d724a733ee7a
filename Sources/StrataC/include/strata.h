/*
 * strata.h: Strata's store from C (and from Python, through ctypes).
 *
 * The library is libStrataC.so, built by `swift build -c release --product StrataC`.
 * Nothing of Swift crosses this surface: handles are opaque pointers, numbers are fixed-width
 * C types and text is NUL-terminated UTF-8.
 *
 * Errors
 *   Every function that can fail returns a strata_status: STRATA_OK (0) or a code below. On
 *   failure, strata_last_error() gives the store's own message (naming the file, table and
 *   key, and what to do), kept per thread until that thread's next failing call. A function
 *   that fails leaves its outputs unspecified unless it says otherwise, and what it leaves
 *   behind in the store is what the Swift API's same call documents: an update batch is
 *   checked whole before anything is applied; nothing durable changes except at a checkpoint.
 *
 * Threads
 *   A store and its tables may be used from many threads at once, with no lock of the
 *   caller's: batches on different shards of a table run in parallel, and a checkpoint waits
 *   for batches in flight. The library holds no lock of the caller's language: Python's
 *   ctypes releases the GIL around each call. The exceptions are stated at the functions:
 *   a handle must not be released while another thread uses it.
 *
 * Processes
 *   One process opens a store for writing; others may open it read-only (read_only = 1), each
 *   at the last checkpoint the writer completed. A handle belongs to the process that opened
 *   it: after fork() every call on it in the child fails with STRATA_E_FORKED, whatever it
 *   would have done (LMDB forbids using an environment across fork), and releasing it frees
 *   nothing: the child leaks the handle rather than shut down its parent's store. A child,
 *   such as a PyTorch DataLoader worker, opens the store again, read-only.
 *
 * Memory
 *   The caller owns every buffer it passes; the library reads or writes it only during the
 *   call and keeps no pointer to it. Memory the library returns through a `void **` or
 *   `char **` is the caller's, to be freed with strata_free(). Handles are freed with their
 *   own release function.
 */
#ifndef STRATA_H
#define STRATA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The bump of this number marks a change of this header that breaks callers. */
#define STRATA_API_VERSION 1

typedef enum strata_status {
    STRATA_OK = 0,
    /* An argument is out of range or a pointer is NULL where it may not be. Nothing changed. */
    STRATA_E_INVALID_ARGUMENT = 1,
    /* No table of that name. */
    STRATA_E_UNKNOWN_TABLE = 2,
    /* A table of that name exists with another spec. */
    STRATA_E_TABLE_EXISTS = 3,
    /* The name or spec cannot make a table. */
    STRATA_E_INVALID_TABLE = 4,
    /* A buffer's element count does not match the keys and the table's dimension. */
    STRATA_E_SHAPE = 5,
    /* A gradient, or the step it makes, is not finite; the batch was rejected whole. */
    STRATA_E_NON_FINITE = 6,
    /* The learning rate cannot be used with the table's optimizer. Nothing was applied. */
    STRATA_E_LEARNING_RATE = 7,
    /* Rows to assign cannot be stored (a repeated key, a value that is not finite). */
    STRATA_E_INVALID_ROWS = 8,
    /* No store at the path, and create was 0 (or the store is opened read-only). */
    STRATA_E_NO_STORE = 9,
    /* The directory holds files that are not a store's: nothing was written there. */
    STRATA_E_NOT_EMPTY = 10,
    /* Another process, or another handle in this one, has the store open for writing. */
    STRATA_E_LOCKED = 11,
    /* The store is read-only (opened so, or its directory cannot be written). */
    STRATA_E_READ_ONLY = 12,
    /* The files were written by a Strata whose format this one does not read. */
    STRATA_E_FORMAT = 13,
    /* A file does not hold what it should. */
    STRATA_E_CORRUPTED = 14,
    /* The disk is full; the store remains at its last checkpoint. */
    STRATA_E_DISK_FULL = 15,
    /* The store was closed. */
    STRATA_E_CLOSED = 16,
    /* A checkpoint is in progress, was interrupted or was left undecided by a run over
       several processes; the message says which and what to do. */
    STRATA_E_CHECKPOINT = 17,
    /* The memory budgets cannot hold a single row. */
    STRATA_E_BUDGET = 18,
    /* The handle was opened by another process (this one is a child of fork()). */
    STRATA_E_FORKED = 19,
    /* Any other failed system or LMDB call. */
    STRATA_E_SYSTEM = 20
} strata_status;

/* An open store. Opaque. */
typedef struct strata_store strata_store;
/* A table of an open store. Opaque; it keeps its store's handle alive. */
typedef struct strata_table strata_table;

/* The version of this library ("1.0.0"): a static string. Thread-safe. */
const char *strata_version(void);

/* The message of the calling thread's last failed call, or "" if none failed. The string is
   the library's, valid until this thread's next call into the library. Thread-safe. */
const char *strata_last_error(void);

/* Frees memory the library returned (payloads, JSON). NULL is allowed. Thread-safe. */
void strata_free(void *memory);

/* ---- Stores ---------------------------------------------------------------------------- */

typedef struct strata_store_options {
    /* Hot memory, in bytes, for each table (rows in anonymous memory). -1: 256 MiB. */
    int64_t hot_bytes;
    /* Warm memory, in bytes, for each table (rows in a memory-mapped file). -1: 1 GiB. */
    int64_t warm_bytes;
    /* A cap on LMDB's map pages resident in this process; -1: none. */
    int64_t map_resident_bytes;
    /* The LMDB map size of a new store, which grows as checkpoints need; -1: 256 KiB. */
    int64_t initial_map_bytes;
    /* 1: create the store if the directory (new or empty) holds none. 0: STRATA_E_NO_STORE. */
    int32_t create;
    /* 1: open read-only, at the last checkpoint, beside a writer in another process. */
    int32_t read_only;
    /* What opening for writing does with a checkpoint left undecided by a run over several
       processes: 0 refuse (STRATA_E_CHECKPOINT), 1 abandon it. */
    int32_t roll_back_undecided;
    int32_t reserved;
} strata_store_options;

/* Fills `options` with the defaults above. Thread-safe. */
void strata_store_options_init(strata_store_options *options);

/* Opens, or creates, the store in directory `path`; `options` may be NULL for the defaults.
   On success *store is a new handle, released with strata_store_release; on failure it is
   NULL. What the store holds is its last checkpoint: changes made after it were lost with
   the process that made them. A non-empty directory that is not a store is refused
   (STRATA_E_NOT_EMPTY) and left as it was. Thread-safe. */
strata_status strata_store_open(const char *path, const strata_store_options *options,
                                strata_store **store);

/* Closes the store: waits for a checkpoint being written, keeps the warm tier's index for
   the next open and releases the store's lock. Changes since the last checkpoint are not
   kept: checkpoint first. The handle stays valid, and every later call on it or on its
   tables fails with STRATA_E_CLOSED. Closing a closed store succeeds. Thread-safe, and safe
   while other threads use the store (they finish first, or fail with STRATA_E_CLOSED). */
strata_status strata_store_close(strata_store *store);

/* Frees the handle, closing the store first if it is open (an error of that close is lost:
   call strata_store_close to see it). Tables taken from it keep the closed store alive but
   fail with STRATA_E_CLOSED. NULL is allowed. No other thread may use this handle during or
   after the call. */
void strata_store_release(strata_store *store);

/* Makes the current state of every table durable, with `payload` (`payload_size` bytes; NULL
   when 0), as one atomic step: after a crash at any moment the store reopens at exactly this
   checkpoint or the one before. Batches on other threads go on while it is written. On
   success *generation (if not NULL) is the checkpoint's number. On failure nothing durable
   changed and the call can be retried. Thread-safe. */
strata_status strata_checkpoint(strata_store *store, const void *payload, size_t payload_size,
                                uint64_t *generation);

/* A checkpoint being written in the background. Opaque. */
typedef struct strata_pending_checkpoint strata_pending_checkpoint;

/* Starts a checkpoint of the current state of every table, with `payload`, and returns once
   that state is taken: it is written on a background thread while batches go on (a row
   changed before it is written is copied first). The state is taken between batches: the
   call waits for batches in progress, and first for a checkpoint still being written. On
   success *pending is a new handle; strata_checkpoint_wait says when the checkpoint is
   durable. The handle keeps its store's handle alive, so it may be waited on after the store
   is closed or released (either waits for the checkpoint first). A checkpoint whose handle is
   released unwaited is still written, and its failure is then seen by no one. Thread-safe. */
strata_status strata_checkpoint_begin(strata_store *store, const void *payload, size_t payload_size,
                                      strata_pending_checkpoint **pending);

/* Waits until the checkpoint is durable, and sets *generation (if not NULL) to its number;
   or fails as strata_checkpoint fails, the store then at the checkpoint before and the rows
   this one took going into the next. Gives the same outcome every time it is called.
   Thread-safe. */
strata_status strata_checkpoint_wait(strata_pending_checkpoint *pending, uint64_t *generation);

/* 1 once the checkpoint has ended (durable or failed; strata_checkpoint_wait then returns at
   once), 0 while it is being written, -1 for a NULL handle or one of another process (a
   child of fork). Does not wait. Thread-safe. */
int32_t strata_checkpoint_done(strata_pending_checkpoint *pending);

/* Frees the handle (the checkpoint goes on). NULL is allowed. No other thread may use this
   handle during or after the call. */
void strata_pending_checkpoint_release(strata_pending_checkpoint *pending);

/* The last completed checkpoint: its generation (0 for a store never checkpointed) and the
   payload written with it, in memory the caller frees with strata_free (*payload is NULL
   when the payload is empty). Any output pointer may be NULL. Thread-safe. */
strata_status strata_last_checkpoint(strata_store *store, uint64_t *generation,
                                     void **payload, size_t *payload_size);

/* The store as JSON: {"path", "read_only", "last_checkpoint": {generation, time, ...},
   "tables": {name: {"spec": ..., "statistics": ...}}}, NUL-terminated, in memory the caller
   frees with strata_free. Thread-safe. */
strata_status strata_store_statistics_json(strata_store *store, char **json);

/* ---- Tables ---------------------------------------------------------------------------- */

typedef enum strata_dtype {
    STRATA_FLOAT32 = 0, STRATA_FLOAT16 = 1, STRATA_BFLOAT16 = 2
} strata_dtype;

typedef enum strata_initializer {
    /* Every value 0. */
    STRATA_INIT_ZEROS = 0,
    /* Every value init_a. */
    STRATA_INIT_CONSTANT = 1,
    /* Uniform in [init_a, init_b]. */
    STRATA_INIT_UNIFORM = 2,
    /* Normal with mean init_a and standard deviation init_b. */
    STRATA_INIT_NORMAL = 3
} strata_initializer;

typedef enum strata_optimizer {
    /* w -= lr * g */
    STRATA_SGD = 0,
    /* Per element: a += g^2, w -= lr * g / (sqrt(a) + epsilon). */
    STRATA_ADAGRAD = 1,
    /* One accumulator per row (FBGEMM's default): a += mean(g^2). */
    STRATA_ROWWISE_ADAGRAD = 2,
    /* Adam with a per-row step count (lazy Adam). */
    STRATA_ADAM = 3,
    /* FTRL-Proximal: learning_rate is alpha. */
    STRATA_FTRL = 4
} strata_optimizer;

/* What a table is, fixed when it is created and stored with it. */
typedef struct strata_table_spec {
    /* Floats per row, 1 to 65536. */
    int32_t dimension;
    /* How values are stored (strata_dtype); lookups always return float32. */
    int32_t dtype;
    /* The value of a row never written: a function of (init_seed, key) alone. */
    int32_t initializer;
    float init_a, init_b;
    uint64_t init_seed;
    /* The optimizer whose state lives beside each row (strata_optimizer) and its settings;
       settings another optimizer has no use for are ignored. */
    int32_t optimizer;
    float learning_rate;
    /* Adagrad, row-wise Adagrad and Adam. */
    float epsilon;
    /* Adagrad and row-wise Adagrad. */
    float initial_accumulator;
    /* Adam. */
    float beta1, beta2;
    /* FTRL. */
    float ftrl_beta, l1, l2;
    int32_t reserved;
} strata_table_spec;

/* Fills `spec` with `dimension`, float32, zeros (seed 0) and SGD at learning rate 0.01, and
   each optimizer's defaults: epsilon 1e-8, initial accumulator 0, beta1 0.9, beta2 0.999,
   ftrl_beta 1, l1 0, l2 0. Thread-safe. */
void strata_table_spec_init(strata_table_spec *spec, int32_t dimension);

/* Creates table `name` (1 to 64 characters of A-Z, a-z, 0-9, '_', '-', '.'), or opens it if
   it exists with the same spec (STRATA_E_TABLE_EXISTS if with another). The table becomes
   durable with the next checkpoint. `hot_bytes` and `warm_bytes` are its budgets, -1 for the
   store's; they are not stored. On success *table is a new handle, released with
   strata_table_release. Thread-safe. */
strata_status strata_table_create(strata_store *store, const char *name, const strata_table_spec *spec,
                                  int64_t hot_bytes, int64_t warm_bytes, strata_table **table);

/* Opens the existing table `name`. Thread-safe. */
strata_status strata_table_open(strata_store *store, const char *name, strata_table **table);

/* The table's spec. Thread-safe. */
strata_status strata_table_get_spec(strata_table *table, strata_table_spec *spec);

/* The table's counts of rows per tier, bytes and traffic, as JSON, in memory the caller frees
   with strata_free. Thread-safe. */
strata_status strata_table_statistics_json(strata_table *table, char **json);

/* Frees the handle. NULL is allowed. No other thread may use this handle during or after
   the call. */
void strata_table_release(strata_table *table);

/* ---- Rows ------------------------------------------------------------------------------
   `keys` holds `count` keys; `rows` and `gradients` hold `floats` = count * dimension float32
   values, row after row (C order), else the call fails with STRATA_E_SHAPE. Keys may repeat.
   A buffer may be NULL when its count is 0. All are thread-safe. */

/* Copies the rows of `keys` into `rows` and brings them to the hot tier. A row never written
   reads as the initializer's values. On failure `rows` is unspecified. */
strata_status strata_lookup(strata_table *table, const uint64_t *keys, size_t count,
                            float *rows, size_t floats);

/* Like strata_lookup, for inference: rows stay in their tier and no counter changes.
   strata_lookup and strata_peek are the row calls a read-only store allows. */
strata_status strata_peek(strata_table *table, const uint64_t *keys, size_t count,
                          float *rows, size_t floats);

/* One optimizer step for the rows of `keys`, a repeated key getting one step with the sum of
   its gradients (summed in order). `learning_rate`, if not NULL, overrides the table's for
   this batch. If a gradient is not finite, or a step would make a value or an optimizer
   state element not finite, the whole batch is rejected (STRATA_E_NON_FINITE) and nothing
   changes. */
strata_status strata_apply_gradients(strata_table *table, const uint64_t *keys, size_t count,
                                     const float *gradients, size_t floats, const float *learning_rate);

/* Removes rows: they read as the initializer's values again, and the next checkpoint deletes
   them from disk. */
strata_status strata_remove(strata_table *table, const uint64_t *keys, size_t count);

/* Measures strata_lookup from inside the library: `repeats` lookups of the same keys, and
   *seconds the time they took. With fresh_output 0 each lookup writes `rows`; with 1 each
   writes a new buffer of `floats` floats, allocated (malloc) and freed around it, as a binding
   that returns a new array per call does (`rows` is then unused and may be NULL). For
   comparing a binding's overhead with the library's own call, in the same process and on
   the same table. */
strata_status strata_time_lookups(strata_table *table, const uint64_t *keys, size_t count,
                                  float *rows, size_t floats, int64_t repeats, int32_t fresh_output,
                                  double *seconds);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_H */
