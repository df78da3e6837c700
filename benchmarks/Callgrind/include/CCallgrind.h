// Callgrind's client requests, for the instruction counts of `InstructionCounts`: instrument
// only the operation measured, and dump its counts under a name. Without valgrind's headers
// (a machine without the valgrind package) they do nothing, and the package still builds.
#ifndef AUTHZ_CCALLGRIND_H
#define AUTHZ_CCALLGRIND_H

#if defined(__has_include) && __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
static inline int authz_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
static inline void authz_callgrind_start(void) { CALLGRIND_START_INSTRUMENTATION; }
static inline void authz_callgrind_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
static inline void authz_callgrind_zero(void) { CALLGRIND_ZERO_STATS; }
static inline void authz_callgrind_dump(const char *name) { CALLGRIND_DUMP_STATS_AT(name); }
#else
static inline int authz_on_valgrind(void) { return 0; }
static inline void authz_callgrind_start(void) {}
static inline void authz_callgrind_stop(void) {}
static inline void authz_callgrind_zero(void) {}
static inline void authz_callgrind_dump(const char *name) { (void)name; }
#endif

#endif
