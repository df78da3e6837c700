// Check latency over time, in windows: where wrk gives one p99 for a whole run, this shows
// when the slow answers came (which phase of a sync, which side). CONNS keep-alive connections
// split over THREADS threads, each sending a random GET from PATHS (one request path per line,
// as benchmarks/sync/run.sh writes paths.txt) and waiting for its answer (a closed loop, like
// wrk). At the end: per WINDOW_MS window, requests, req/s, p50, p99 and max in microseconds,
// then the whole run. A diagnostic used for FINDINGS.md, not part of `make bench`.
//
// build: cc -O2 -pthread -o timeline benchmarks/sync/timeline.c
// usage: timeline PORT PATHS SECONDS [CONNS=16] [THREADS=2] [WINDOW_MS=250]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char **paths; static size_t npaths; static int port; static double seconds;
static int conns_per_thread;
typedef struct { double t; float lat; } sample;
typedef struct { sample *s; size_t n, cap; unsigned seed; } tstate;
typedef struct { int fd; double sent; char buf[8192]; size_t have; } conn;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static double t_start;

static void send_one(tstate *st, conn *c) {
    char req[2048];
    const char *p = paths[rand_r(&st->seed) % npaths];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", p);
    c->sent = now();
    if (write(c->fd, req, n) != n) { perror("write"); exit(1); }
}

// Returns 1 when a whole answer is in the buffer (and drops it).
static int complete(conn *c) {
    c->buf[c->have] = 0;
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end) return 0;
    char *cl = strcasestr(c->buf, "content-length:");
    size_t len = cl ? strtoul(cl + 15, NULL, 10) : 0;
    size_t total = (end + 4 - c->buf) + len;
    if (c->have < total) return 0;
    memmove(c->buf, c->buf + total, c->have - total);
    c->have -= total;
    return 1;
}

static void *run(void *arg) {
    tstate *st = arg;
    int ep = epoll_create1(0);
    conn *cs = calloc(conns_per_thread, sizeof *cs);
    for (int i = 0; i < conns_per_thread; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        if (connect(fd, (void *)&a, sizeof a)) { perror("connect"); exit(1); }
        int one = 1; setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cs[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        send_one(st, &cs[i]);
    }
    double stop = t_start + seconds;
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, 100);
        double t = now();
        if (t > stop) break;
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            ssize_t r = read(c->fd, c->buf + c->have, sizeof c->buf - 1 - c->have);
            if (r <= 0) { fprintf(stderr, "read: %zd %s\n", r, strerror(errno)); exit(1); }
            c->have += r;
            while (complete(c)) {
                if (st->n == st->cap) { st->cap = st->cap ? st->cap * 2 : 1 << 20; st->s = realloc(st->s, st->cap * sizeof(sample)); }
                st->s[st->n++] = (sample){t - t_start, (float)((t - c->sent) * 1e6)};
                send_one(st, c);
            }
        }
    }
    return NULL;
}

static int cmpf(const void *a, const void *b) { float x = *(float *)a, y = *(float *)b; return (x > y) - (x < y); }

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: timeline PORT PATHS SECONDS [CONNS] [THREADS] [WINDOW_MS]\n"); return 2; }
    port = atoi(argv[1]); seconds = atof(argv[3]);
    int conns = argc > 4 ? atoi(argv[4]) : 16, threads = argc > 5 ? atoi(argv[5]) : 2;
    double window = (argc > 6 ? atof(argv[6]) : 250) / 1000;
    conns_per_thread = conns / threads;
    FILE *f = fopen(argv[2], "r"); char line[2048]; size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (npaths == cap) { cap = cap ? cap * 2 : 1024; paths = realloc(paths, cap * sizeof *paths); }
        paths[npaths++] = strdup(line);
    }
    struct timespec rt; clock_gettime(CLOCK_REALTIME, &rt);
    printf("# start realtime %.3f\n", rt.tv_sec + rt.tv_nsec * 1e-9);
    t_start = now();
    pthread_t th[64]; tstate st[64] = {0};
    for (int i = 0; i < threads; i++) { st[i].seed = 42 + i; pthread_create(&th[i], NULL, run, &st[i]); }
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    size_t total = 0; for (int i = 0; i < threads; i++) total += st[i].n;
    int nw = (int)(seconds / window) + 1;
    float **w = calloc(nw, sizeof *w); size_t *wn = calloc(nw, sizeof *wn), *wc = calloc(nw, sizeof *wc);
    float *all = malloc(total * sizeof(float)); size_t k = 0;
    for (int i = 0; i < threads; i++) for (size_t j = 0; j < st[i].n; j++) {
        int b = (int)(st[i].s[j].t / window); if (b >= nw) b = nw - 1;
        if (wn[b] == wc[b]) { wc[b] = wc[b] ? wc[b] * 2 : 4096; w[b] = realloc(w[b], wc[b] * sizeof(float)); }
        w[b][wn[b]++] = st[i].s[j].lat; all[k++] = st[i].s[j].lat;
    }
    printf("# window_s requests req_per_s p50_us p99_us max_us\n");
    for (int b = 0; b < nw; b++) {
        if (!wn[b]) { printf("%.2f 0 0 0 0 0\n", b * window); continue; }
        qsort(w[b], wn[b], sizeof(float), cmpf);
        printf("%.2f %zu %.0f %.0f %.0f %.0f\n", b * window, wn[b], wn[b] / window, w[b][wn[b] / 2], w[b][(size_t)(wn[b] * 0.99)], w[b][wn[b] - 1]);
    }
    qsort(all, total, sizeof(float), cmpf);
    printf("# total %zu requests, %.0f/s, p50 %.0f us, p99 %.0f us, p999 %.0f us, max %.0f us\n", total, total / seconds,
           all[total / 2], all[(size_t)(total * 0.99)], all[(size_t)(total * 0.999)], all[total - 1]);
    return 0;
}
