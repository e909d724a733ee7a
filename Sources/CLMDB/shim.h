// LMDB from Debian's liblmdb-dev, found through pkg-config `lmdb`.
#include <lmdb.h>
