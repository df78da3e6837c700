#define _GNU_SOURCE // SCHED_IDLE
#include "CAuthzMHD.h"

#include <strings.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sched.h>
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>

static int authz_mhd_listen_socket(const char *host, uint16_t port, char *error, size_t error_size) {
    struct addrinfo hints, *found = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    int rc = getaddrinfo(host, service, &hints, &found);
    if (rc != 0 || found == NULL) {
        snprintf(error, error_size, "cannot resolve host `%s`: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, found->ai_protocol);
    if (fd < 0) {
        snprintf(error, error_size, "socket: %s", strerror(errno));
        freeaddrinfo(found);
        return -1;
    }
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(fd, found->ai_addr, found->ai_addrlen) != 0) {
        snprintf(error, error_size, "cannot listen on %s:%u: %s", host, (unsigned)port, strerror(errno));
        close(fd);
        freeaddrinfo(found);
        return -1;
    }
    freeaddrinfo(found);
    if (listen(fd, 1024) != 0) {
        snprintf(error, error_size, "listen: %s", strerror(errno));
        close(fd);
        return -1;
    }
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    return fd;
}

struct MHD_Daemon *authz_mhd_start(const authz_mhd_config *c, char *error, size_t error_size) {
    int fd = authz_mhd_listen_socket(c->host, c->port, error, error_size);
    if (fd < 0) return NULL;
    // MHD_ALLOW_SUSPEND_RESUME: a sync (seconds for a large replace) is run off the pool thread
    // with its connection suspended, so the other connections of that thread keep answering.
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME;
    unsigned int threads = c->threads > 0 ? c->threads : 1;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, 0, NULL, NULL,
        c->handler, c->handler_cls,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, c->connection_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, c->connection_timeout,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, c->connection_memory_limit,
        MHD_OPTION_NOTIFY_COMPLETED, c->completed, c->completed_cls,
        MHD_OPTION_END);
    if (d == NULL) {
        snprintf(error, error_size, "libmicrohttpd refused to start (threads %u, connection limit %u)",
                 threads, c->connection_limit);
        close(fd);
    }
    return d;
}

uint16_t authz_mhd_bound_port(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (info != NULL && info->port != 0) return info->port;
    info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_LISTEN_FD);
    if (info == NULL) return 0;
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    if (getsockname(info->listen_fd, (struct sockaddr *)&addr, &len) != 0) return 0;
    if (addr.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&addr)->sin_port);
    if (addr.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    return 0;
}

unsigned int authz_mhd_current_connections(struct MHD_Daemon *daemon) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return info == NULL ? 0 : info->num_connections;
}

void authz_mhd_stop_accepting(struct MHD_Daemon *daemon) {
    MHD_socket fd = MHD_quiesce_daemon(daemon);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

enum MHD_Result authz_mhd_respond(struct MHD_Connection *connection, unsigned int status,
                                  const void *body, size_t body_size, const char *content_type,
                                  const char *header_name, const char *header_value,
                                  int close_connection) {
    struct MHD_Response *r = MHD_create_response_from_buffer(body_size, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (r == NULL) return MHD_NO;
    if (content_type != NULL) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (header_name != NULL && header_value != NULL) MHD_add_response_header(r, header_name, header_value);
    if (close_connection) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(connection, status, r);
    MHD_destroy_response(r);
    return ok;
}

const char *authz_mhd_lookup(struct MHD_Connection *connection, enum MHD_ValueKind kind,
                             const char *key, size_t key_size, size_t *value_size) {
    const char *value = NULL;
    size_t size = 0;
    if (MHD_lookup_connection_value_n(connection, kind, key, key_size, &value, &size) != MHD_YES) {
        *value_size = 0;
        return NULL;
    }
    *value_size = size;
    return value;
}

struct authz_mhd_counting {
    const char *key;
    unsigned int count;
};

static enum MHD_Result authz_mhd_count_one(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    (void)value;
    struct authz_mhd_counting *c = cls;
    if (key && strcasecmp(key, c->key) == 0) c->count++;
    return MHD_YES;
}

unsigned int authz_mhd_count(struct MHD_Connection *connection, enum MHD_ValueKind kind, const char *key) {
    struct authz_mhd_counting c = {key, 0};
    MHD_get_connection_values(connection, kind, authz_mhd_count_one, &c);
    return c.count;
}

// Linux nice values are per thread; Swift cannot call gettid(2) portably (SYS_gettid is a
// macro). Lowers the calling thread's priority, for background work such as a large sync:
// SCHED_IDLE, so that a request thread that wakes up takes the core at once. At nice 10 alone
// the sync's threads kept the core for their whole slice (3.5-5 ms, seen with perf sched)
// while a request thread waited; new threads inherit both. The nice value stays as the
// fallback should SCHED_IDLE be refused.
void authz_lower_thread_priority(int nice_value) {
#ifdef __linux__
    pid_t tid = (pid_t)syscall(SYS_gettid);
    setpriority(PRIO_PROCESS, (id_t)tid, nice_value);
    struct sched_param none = {0};
    sched_setscheduler(tid, SCHED_IDLE, &none);
#else
    (void)nice_value;
#endif
}

// The threads are found in /proc/self/task (a thread's policy is its own on Linux). A thread
// that exits meanwhile makes its calls fail with ESRCH, which is fine: it needs nothing. A
// thread started during the scan may be missed, so the scan repeats until a pass finds none.
// With an RLIMIT_NICE below 20 the kernel may let a thread leave the idle class but not reach
// nice 0: it then gets the lowest nice the limit allows (20 - limit), still normal policy.
int authz_raise_idle_threads(int *refused) {
    *refused = 0;
#ifdef __linux__
    struct rlimit limit;
    int floor_nice = 0;
    if (getrlimit(RLIMIT_NICE, &limit) == 0 && limit.rlim_cur < 20) floor_nice = 20 - (int)limit.rlim_cur;
    int raised = 0;
    for (int pass = 0; pass < 4; pass++) {
        DIR *tasks = opendir("/proc/self/task");
        if (tasks == NULL) break;
        int found = 0;
        struct dirent *entry;
        while ((entry = readdir(tasks)) != NULL) {
            if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
            pid_t tid = (pid_t)atoi(entry->d_name);
            if (sched_getscheduler(tid) != SCHED_IDLE) continue;
            found++;
            struct sched_param none = {0};
            if (sched_setscheduler(tid, SCHED_OTHER, &none) == 0) {
                if (setpriority(PRIO_PROCESS, (id_t)tid, 0) != 0 && floor_nice > 0)
                    setpriority(PRIO_PROCESS, (id_t)tid, floor_nice);
                raised++;
            } else if (errno == EPERM) {
                (*refused)++;
            }
        }
        closedir(tasks);
        if (found == 0 || *refused > 0) break;
    }
    return raised;
#else
    return 0;
#endif
}

void authz_name_thread(const char *name) {
#ifdef __linux__
    pthread_setname_np(pthread_self(), name);
#else
    (void)name;
#endif
}
