// See strata_lmdb_guard.h.
#include "strata_lmdb_guard.h"

#include <lmdb.h>

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

// Set while a guarded call runs on this thread. Initial-exec TLS: a signal handler must not
// make the first access to a dynamically allocated TLS block.
static __thread sigjmp_buf *armed __attribute__((tls_model("initial-exec")));
static struct sigaction previous_segv, previous_bus;
static pthread_once_t installed = PTHREAD_ONCE_INIT;

static void on_fault(int sig, siginfo_t *info, void *context) {
    sigjmp_buf *target = armed;
    if (target) {
        armed = NULL;
        siglongjmp(*target, sig);
    }
    // Not ours: what would have happened without this handler.
    struct sigaction *previous = sig == SIGSEGV ? &previous_segv : &previous_bus;
    if (previous->sa_flags & SA_SIGINFO) {
        previous->sa_sigaction(sig, info, context);
    } else if (previous->sa_handler == SIG_DFL) {
        // Returning re-runs the faulting instruction, which now takes the default action.
        signal(sig, SIG_DFL);
    } else if (previous->sa_handler != SIG_IGN) {
        previous->sa_handler(sig);
    }
}

static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &previous_segv);
    sigaction(SIGBUS, &action, &previous_bus);
}

// SA_NODEFER leaves the signal unblocked in the handler, so no mask needs restoring after
// the jump and sigsetjmp need not save one (a system call on every guarded call).

static void on_assertion(MDB_env *env, const char *message) {
    (void)env;
    (void)message;
    sigjmp_buf *target = armed;
    if (target) {
        armed = NULL;
        siglongjmp(*target, SIGABRT);
    }
}

int strata_mdb_guard_assertions(void *env) { return mdb_env_set_assert(env, on_assertion); }

/// Reads a byte of every page `value` spans, and its last byte.
static void touch(const MDB_val *value) {
    volatile const unsigned char *bytes = (volatile const unsigned char *)value->mv_data;
    for (size_t at = 0; at < value->mv_size; at += 4096) (void)bytes[at];
    if (value->mv_size > 0) (void)bytes[value->mv_size - 1];
}

// The key is touched only when LMDB pointed it into its pages (a cursor's found key); a key
// the caller passed in stays the caller's.
#define GUARDED(call, key, data)                                               \
    do {                                                                       \
        pthread_once(&installed, install);                                     \
        void *given = key->mv_data;                                            \
        sigjmp_buf here;                                                       \
        volatile int phase = 0; /* read after the jump */               \
        if (sigsetjmp(here, 0) != 0) return phase == 0 ? STRATA_MDB_FAULT : STRATA_MDB_OUTSIDE_MAP; \
        armed = &here;                                                         \
        int rc = (call);                                                       \
        if (rc == 0) {                                                         \
            phase = 1;                                                         \
            if (key->mv_data != given) touch(key);                             \
            touch(data);                                                       \
        }                                                                      \
        armed = NULL;                                                          \
        return rc;                                                             \
    } while (0)

int strata_mdb_get(void *txn, unsigned int dbi, void *key_, void *data_) {
    MDB_val *key = key_, *data = data_;
    GUARDED(mdb_get(txn, dbi, key, data), key, data);
}

int strata_mdb_cursor_get(void *cursor, void *key_, void *data_, int op) {
    MDB_val *key = key_, *data = data_;
    GUARDED(mdb_cursor_get(cursor, key, data, (MDB_cursor_op)op), key, data);
}
