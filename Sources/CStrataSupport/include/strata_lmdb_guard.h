// LMDB reads that a damaged data file cannot turn into a signal.
//
// LMDB trusts its file: it follows the page numbers it finds there, and reads node sizes
// from the page. Garbage written over a page in use can make `mdb_get` or `mdb_cursor_get`
// read outside the memory map (SIGSEGV) or past the end of the file (SIGBUS), or return a
// value that lies outside the map. These wrappers make each of those a return code:
// - the call runs with a SIGSEGV and SIGBUS handler armed for this thread only; a fault,
//   or one of LMDB's assertions failing, jumps back out of LMDB and returns STRATA_MDB_FAULT;
// - a value found (and a key LMDB points into its pages) is read, a byte in every page and
//   its last byte, under the same guard, so that the caller can read all of it; a fault
//   there returns STRATA_MDB_OUTSIDE_MAP. (LMDB does not say where its map is, and a
//   write transaction's changed pages are outside it anyway: touching is the check.)
// After either code the transaction, and its cursors, must not be used again: abort it.
// The jump leaves only LMDB's C frames, and LMDB takes no lock in a read. Faults outside a
// guarded call go to the handlers that were installed before (the Swift runtime's, a
// sanitizer's, or the default action), as if these did not exist.
#ifndef STRATA_LMDB_GUARD_H
#define STRATA_LMDB_GUARD_H

// LMDB's types are LMDB's module's (CLMDB): here they pass as untyped pointers, so that
// this header does not declare them a second time.

/// LMDB faulted on a damaged page. Outside LMDB's own codes (MDB_KEYEXIST .. MDB_LAST_ERRCODE).
#define STRATA_MDB_FAULT (-30500)
/// A cursor found a key of the wrong size or out of order (Strata's LMDB layer checks).
#define STRATA_MDB_BAD_KEY (-30502)
/// LMDB returned a value that cannot be read: outside its memory map or the file.
#define STRATA_MDB_OUTSIDE_MAP (-30501)

/// Makes LMDB's assertion failures inside a guarded call return STRATA_MDB_FAULT too, where
/// LMDB would abort the process (`mdb_env_set_assert`; `env` an `MDB_env *`). Outside a
/// guarded call LMDB still aborts.
int strata_mdb_guard_assertions(void *env);

/// `mdb_get(txn, dbi, key, data)`, guarded: `txn` an `MDB_txn *`, `key` and `data`
/// `MDB_val *`. Thread-safe as `mdb_get` is.
int strata_mdb_get(void *txn, unsigned int dbi, void *key, void *data);

/// `mdb_cursor_get(cursor, key, data, op)`, guarded: `cursor` an `MDB_cursor *`, `op` an
/// `MDB_cursor_op`. Thread-safe as `mdb_cursor_get` is.
int strata_mdb_cursor_get(void *cursor, void *key, void *data, int op);

#endif
