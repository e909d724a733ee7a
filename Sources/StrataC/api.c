// The parts of strata.h that need no Swift: the per-thread error message, defaults and free.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "strata.h"
#include "strata_internal.h"

// Each thread's message lives in a buffer under a pthread key, freed when the thread ends.
// Not _Thread_local: a library that Python loads with dlopen cannot take static TLS.
enum { message_capacity = 4096 };
static pthread_key_t message_key;
static pthread_once_t message_once = PTHREAD_ONCE_INIT;

static void make_message_key(void) { pthread_key_create(&message_key, free); }

const char *strata_version(void) { return "1.0.0"; }

const char *strata_last_error(void) {
    pthread_once(&message_once, make_message_key);
    const char *message = pthread_getspecific(message_key);
    return message ? message : "";
}

void strata_set_last_error(const char *message) {
    pthread_once(&message_once, make_message_key);
    char *buffer = pthread_getspecific(message_key);
    if (!buffer) {
        buffer = malloc(message_capacity);
        // Out of memory: the thread keeps no message, and strata_last_error() gives "".
        if (!buffer || pthread_setspecific(message_key, buffer) != 0) { free(buffer); return; }
    }
    size_t n = strlen(message);
    if (n >= message_capacity) {
        n = message_capacity - 1;
        // Never end inside a UTF-8 sequence.
        while (n > 0 && ((unsigned char)message[n] & 0xC0) == 0x80) n--;
    }
    memcpy(buffer, message, n);
    buffer[n] = 0;
}

void strata_free(void *memory) { free(memory); }

// Counts the forks between this process and the one that loaded the library: a handle made
// in one process is refused in its children, checked with a load instead of getpid's system call.
static _Atomic unsigned long long fork_generation;

static void after_fork_in_child(void) { fork_generation++; }

__attribute__((constructor)) static void watch_forks(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

unsigned long long strata_fork_generation(void) { return fork_generation; }

void *strata_allocate(size_t size) { return malloc(size == 0 ? 1 : size); }

void strata_store_options_init(strata_store_options *options) {
    if (!options) return;
    options->hot_bytes = -1;
    options->warm_bytes = -1;
    options->map_resident_bytes = -1;
    options->initial_map_bytes = -1;
    options->create = 1;
    options->read_only = 0;
    options->roll_back_undecided = 0;
    options->reserved = 0;
}

void strata_table_spec_init(strata_table_spec *spec, int32_t dimension) {
    if (!spec) return;
    memset(spec, 0, sizeof *spec);
    spec->dimension = dimension;
    spec->dtype = STRATA_FLOAT32;
    spec->initializer = STRATA_INIT_ZEROS;
    spec->optimizer = STRATA_SGD;
    spec->learning_rate = 0.01f;
    spec->epsilon = 1e-8f;
    spec->beta1 = 0.9f;
    spec->beta2 = 0.999f;
    spec->ftrl_beta = 1.0f;
}
