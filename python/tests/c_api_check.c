/* strata.h from C: compiled against the header and linked against libStrataC.so by
   test_c_api.py, so a function the header declares and the library lacks fails the link.
   Prints one line per check; exits 1 at the first that fails. Usage: c_api_check DIR, or
   c_api_check --layout to print the structs' sizes and field offsets for ctypes to match. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "strata.h"

#define CHECK(cond, what) do { if (!(cond)) { \
    fprintf(stderr, "FAILED %s (last error: %s)\n", what, strata_last_error()); return 1; } \
    printf("ok %s\n", what); } while (0)

#define FIELD(type, field) printf(#type " " #field " %zu\n", offsetof(type, field))

static void print_layout(void) {
    printf("strata_store_options size %zu\n", sizeof(strata_store_options));
    FIELD(strata_store_options, hot_bytes); FIELD(strata_store_options, warm_bytes);
    FIELD(strata_store_options, map_resident_bytes); FIELD(strata_store_options, initial_map_bytes);
    FIELD(strata_store_options, create); FIELD(strata_store_options, read_only);
    FIELD(strata_store_options, roll_back_undecided); FIELD(strata_store_options, reserved);
    printf("strata_table_spec size %zu\n", sizeof(strata_table_spec));
    FIELD(strata_table_spec, dimension); FIELD(strata_table_spec, dtype); FIELD(strata_table_spec, initializer);
    FIELD(strata_table_spec, init_a); FIELD(strata_table_spec, init_b); FIELD(strata_table_spec, init_seed);
    FIELD(strata_table_spec, optimizer); FIELD(strata_table_spec, learning_rate); FIELD(strata_table_spec, epsilon);
    FIELD(strata_table_spec, initial_accumulator); FIELD(strata_table_spec, beta1); FIELD(strata_table_spec, beta2);
    FIELD(strata_table_spec, ftrl_beta); FIELD(strata_table_spec, l1); FIELD(strata_table_spec, l2);
    FIELD(strata_table_spec, reserved);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--layout") == 0) { print_layout(); return 0; }
    if (argc != 2) { fprintf(stderr, "usage: c_api_check DIR | --layout\n"); return 2; }
    CHECK(strcmp(strata_version(), "1.0.0") == 0, "version");
    CHECK(strcmp(strata_last_error(), "") == 0, "no error before any failure");

    strata_store_options options;
    strata_store_options_init(&options);
    options.hot_bytes = 1 << 20;
    strata_store *store = NULL;
    CHECK(strata_store_open(argv[1], &options, &store) == STRATA_OK && store, "open");

    strata_table_spec spec;
    strata_table_spec_init(&spec, 4);
    spec.learning_rate = 0.5f;
    strata_table *table = NULL;
    CHECK(strata_table_create(store, "items", &spec, -1, -1, &table) == STRATA_OK && table, "create");

    uint64_t keys[3] = {7, 9, 7};
    float rows[12], grads[12];
    for (int i = 0; i < 12; i++) grads[i] = (float)(i % 4 + 1);
    CHECK(strata_lookup(table, keys, 3, rows, 12) == STRATA_OK && rows[0] == 0.0f, "lookup of rows never written");
    CHECK(strata_apply_gradients(table, keys, 3, grads, 12, NULL) == STRATA_OK, "apply_gradients");
    CHECK(strata_peek(table, keys, 3, rows, 12) == STRATA_OK, "peek");
    /* Key 7 appears twice: one step with its summed gradient, 2 * 1 * 0.5. */
    CHECK(rows[0] == -1.0f && rows[4] == -0.5f && rows[8] == -1.0f, "repeated key stepped once with its sum");
    float rate = 0.25f;
    uint64_t nine = 9;
    CHECK(strata_apply_gradients(table, &nine, 1, grads, 4, &rate) == STRATA_OK, "learning-rate override");
    CHECK(strata_peek(table, &nine, 1, rows, 4) == STRATA_OK && rows[0] == -0.75f, "override used");

    CHECK(strata_lookup(table, keys, 3, rows, 11) == STRATA_E_SHAPE, "shape refused");
    CHECK(strstr(strata_last_error(), "items") != NULL, "message names the table");
    grads[2] = NAN;
    CHECK(strata_apply_gradients(table, keys, 1, grads, 4, NULL) == STRATA_E_NON_FINITE, "NaN refused");
    CHECK(strata_lookup(NULL, keys, 1, rows, 4) == STRATA_E_INVALID_ARGUMENT, "NULL handle refused");

    const char payload[] = {'a', 0, 'b'};
    uint64_t generation = 0;
    CHECK(strata_checkpoint(store, payload, sizeof payload, &generation) == STRATA_OK && generation == 1, "checkpoint");
    void *back = NULL;
    size_t size = 0;
    CHECK(strata_last_checkpoint(store, &generation, &back, &size) == STRATA_OK && size == 3
          && memcmp(back, payload, 3) == 0, "payload read back");
    strata_free(back);

    strata_pending_checkpoint *pending = NULL;
    CHECK(strata_checkpoint_begin(store, "bg", 2, &pending) == STRATA_OK && pending, "background checkpoint begun");
    CHECK(strata_apply_gradients(table, &nine, 1, grads + 4, 4, NULL) == STRATA_OK, "a batch while it is written");
    CHECK(strata_checkpoint_wait(pending, &generation) == STRATA_OK && generation == 2
          && strata_checkpoint_done(pending) == 1, "background checkpoint durable");
    strata_pending_checkpoint_release(pending);
    CHECK(strata_checkpoint(store, payload, sizeof payload, &generation) == STRATA_OK && generation == 3, "checkpoint after it");

    char *json = NULL;
    CHECK(strata_store_statistics_json(store, &json) == STRATA_OK && strstr(json, "\"items\""), "statistics JSON");
    strata_free(json);
    strata_table_spec got;
    CHECK(strata_table_get_spec(table, &got) == STRATA_OK && got.dimension == 4 && got.learning_rate == 0.5f, "spec read back");

    CHECK(strata_store_close(store) == STRATA_OK, "close");
    CHECK(strata_lookup(table, keys, 1, rows, 4) == STRATA_E_CLOSED, "a closed store's table refuses");
    strata_table_release(table);
    strata_store_release(store);

    CHECK(strata_store_open(argv[1], &options, &store) == STRATA_OK, "reopen");
    CHECK(strata_table_open(store, "items", &table) == STRATA_OK, "table reopened");
    /* The batch during the background checkpoint, grads + 4 = {1, 2, 3, 4} at 0.5: -0.75 - 0.5. */
    CHECK(strata_peek(table, &nine, 1, rows, 4) == STRATA_OK && rows[0] == -1.25f, "rows kept by the checkpoint");
    strata_table_release(table);
    strata_store_release(store);
    return 0;
}
