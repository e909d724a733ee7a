// OpenBLAS from Debian's libopenblas-dev, found through pkg-config `openblas`: the CBLAS
// interface and its thread-count controls.
#include <cblas.h>
