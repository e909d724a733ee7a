// LZ4 from Debian's liblz4-dev, found through pkg-config `liblz4`.
#include <lz4.h>
