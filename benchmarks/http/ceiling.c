// The ceiling for benchmarks/http: a bare libmicrohttpd server that answers every request
// with a constant JSON body about the size of a /v1/check answer.
//
// Same daemon as `authz serve` (Sources/CAuthzMHD/CAuthzMHD.c): internal polling thread pool
// with epoll and ITC, our own listening socket (backlog 1024), the same connection limit,
// timeout and per-connection memory limit, a request-completed callback, and the answer is
// queued on the second access callback (libmicrohttpd 0.9.75 closes the connection after a
// response queued on the first one, so keep-alive needs the second).
//
// usage: ceiling PORT [THREADS] [shared|copy] [SPIN_NS]
//   THREADS  thread-pool size (default: online cores, as `authz serve`)
//   shared   (default) one response made at start, queued for every request: the least
//            work libmicrohttpd can do per request
//   copy     a response created per request from a copy of the body (MHD_RESPMEM_MUST_COPY),
//            as a server whose body changes per request must
//   SPIN_NS  (experiment, default 0) busy-wait this many nanoseconds before answering, in user
//            space (CLOCK_MONOTONIC is read through the vDSO, no system call): stands in for
//            a handler's work, to see what that work costs in the kernel (FINDINGS.md)
//
// build: cc -O2 -o ceiling ceiling.c $(pkg-config --cflags --libs libmicrohttpd)
#include <microhttpd.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char BODY[] =
    "{\"allowed\":false,\"reason\":\"missing_permission\",\"message\":\"`delete` on `sandbox` requires "
    "`delete:sandboxes`, which `user:u12345` does not hold in org `org1234`\",\"revision\":1}\n";

static struct MHD_Response *shared_response;
static int copy_mode;
static long spin_ns;

// Burns spin_ns of wall time in user space (a spin that is preempted ends early in CPU
// terms; rare at these lengths).
static void spin(void) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < spin_ns);
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
    (void)cls; (void)url; (void)method; (void)version; (void)upload_data;
    static int tag;
    if (*con_cls == NULL) {  // headers only: answer on the next call (keep-alive)
        *con_cls = &tag;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {  // a body: read and ignore it
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (spin_ns > 0) spin();
    if (!copy_mode) return MHD_queue_response(c, MHD_HTTP_OK, shared_response);
    struct MHD_Response *r = MHD_create_response_from_buffer(sizeof BODY - 1, (void *)BODY, MHD_RESPMEM_MUST_COPY);
    if (r == NULL) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

static void completed_cb(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t) {
    (void)cls; (void)c; (void)t;
    *con_cls = NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [THREADS] [shared|copy] [SPIN_NS]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    long threads = argc > 2 ? atol(argv[2]) : sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    copy_mode = argc > 3 && strcmp(argv[3], "copy") == 0;
    spin_ns = argc > 4 ? atol(argv[4]) : 0;

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 1024) != 0) {
        perror("bind/listen");
        return 1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);

    shared_response = MHD_create_response_from_buffer(sizeof BODY - 1, (void *)BODY, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(shared_response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");

    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC, 0, NULL, NULL,
        access_cb, NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)threads,
        MHD_OPTION_CONNECTION_LIMIT, 1024u,
        MHD_OPTION_CONNECTION_TIMEOUT, 30u,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(16 * 1024),
        MHD_OPTION_NOTIFY_COMPLETED, completed_cb, NULL,
        MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "libmicrohttpd refused to start\n");
        return 1;
    }
    fprintf(stderr, "ceiling: 127.0.0.1:%d, %ld threads, %s response, %zu-byte body, spin %ld ns\n", port,
            threads, copy_mode ? "per-request" : "shared", sizeof BODY - 1, spin_ns);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sig;
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    MHD_destroy_response(shared_response);
    return 0;
}
