#ifndef CAUTHZMHD_H
#define CAUTHZMHD_H
// The few calls into libmicrohttpd that Swift cannot make directly, or should not make
// piecemeal. Every symbol is prefixed `authz_mhd_`; each says why it exists.

// microhttpd.h expects the platform's socket types to be declared before it.
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <microhttpd.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Everything `authz_mhd_start` passes to MHD_start_daemon's variadic option list.
typedef struct authz_mhd_config {
    /// Numeric address or host name to bind (resolved with getaddrinfo; first result wins).
    const char *host;
    /// 0 asks the kernel for a free port; read it back with `authz_mhd_bound_port`.
    uint16_t port;
    /// Size of MHD's internal thread pool (each thread runs its own epoll loop).
    unsigned int threads;
    /// At most this many open connections; MHD refuses more.
    unsigned int connection_limit;
    /// Seconds of inactivity after which MHD closes a connection (a slow client).
    unsigned int connection_timeout;
    /// Bytes of memory per connection for headers and the URL (MHD's default is 32 KiB).
    size_t connection_memory_limit;
    MHD_AccessHandlerCallback handler;
    void *handler_cls;
    MHD_RequestCompletedCallback completed;
    void *completed_cls;
} authz_mhd_config;

/// Why: MHD_start_daemon is variadic, which Swift cannot call. This binds the listening
/// socket itself (so a failure reports a real errno, such as EADDRINUSE, instead of a bare
/// NULL) and starts the daemon with an internal epoll thread pool and ITC (needed to
/// quiesce). Returns NULL and writes a message into `error` on failure.
struct MHD_Daemon *authz_mhd_start(const authz_mhd_config *config, char *error, size_t error_size);

/// Why: MHD_get_daemon_info is variadic and returns a union. The port the daemon listens on
/// (the kernel's choice when started with port 0); 0 if unknown.
uint16_t authz_mhd_bound_port(struct MHD_Daemon *daemon);

/// Why: as above. The number of connections currently open.
unsigned int authz_mhd_current_connections(struct MHD_Daemon *daemon);

/// Why: MHD_quiesce_daemon hands back the listening socket for the caller to close; doing
/// both here keeps file descriptors out of Swift. Stops accepting; open connections go on.
void authz_mhd_stop_accepting(struct MHD_Daemon *daemon);

/// Why: one call per response (create from a copy of `body`, add headers, queue, release)
/// so the Swift side never holds an MHD_Response and cannot leak one. `header_name` /
/// `header_value` may be NULL; `close_connection` adds `Connection: close`.
enum MHD_Result authz_mhd_respond(struct MHD_Connection *connection, unsigned int status,
                                  const void *body, size_t body_size, const char *content_type,
                                  const char *header_name, const char *header_value,
                                  int close_connection);

/// Why: MHD_lookup_connection_value_n returns a value and its length through out-parameters
/// and a result code; this folds them into one pointer (NULL when absent) and a length, so a
/// query parameter can be read as bytes without strlen or a String.
const char *authz_mhd_lookup(struct MHD_Connection *connection, enum MHD_ValueKind kind,
                             const char *key, size_t key_size, size_t *value_size);

/// How many values of `kind` are named `key` (ASCII case-insensitive): a header sent on
/// several lines has several. `authz_mhd_lookup` returns only the first.
unsigned int authz_mhd_count(struct MHD_Connection *connection, enum MHD_ValueKind kind, const char *key);

/// Lowers the calling thread's priority (Linux: SCHED_IDLE, and the nice value as a fallback;
/// per thread, inherited by the threads it starts): background work such as a large sync must
/// not take the cores from the request threads, nor make a woken one wait.
void authz_lower_thread_priority(int nice_value);

/// Raises every thread of this process that is in the idle class (Linux SCHED_IDLE: the
/// background work lowered by authz_lower_thread_priority) to normal priority (SCHED_OTHER,
/// nice 0, or the lowest nice RLIMIT_NICE allows), and returns how many it raised; `refused`
/// gets how many the kernel refused (EPERM: leaving the idle class from nice 10 needs
/// CAP_SYS_NICE or an RLIMIT_NICE of at least 10). Why: the idle class gets
/// no CPU at all while the request threads keep both cores busy, so a sync could wait without
/// bound; past a limit the server lets it compete as an equal. 0 where there is no idle class.
int authz_raise_idle_threads(int *refused);

/// A counter that one thread writes and others read (per-thread metrics): relaxed atomic load
/// and store, no read-modify-write, so adding costs what a plain add does and a concurrent
/// reader sees a whole value. Why here: Swift's atomics cannot live in raw shared memory.
static inline void authz_counter_add(uint64_t *counter, uint64_t amount) {
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + amount, __ATOMIC_RELAXED);
}
static inline uint64_t authz_counter_load(const uint64_t *counter) {
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

/// Names the calling thread (Linux: at most 15 bytes, shown by top and in /proc/.../comm).
/// Why: pthread_setname_np is a GNU extension the Glibc module does not export to Swift.
void authz_name_thread(const char *name);

#ifdef __cplusplus
}
#endif
#endif
