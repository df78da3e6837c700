// The requests are static inline functions in include/CCallgrind.h; a C target needs a source.
#include "CCallgrind.h"
