// What this machine's memory costs, as the check and the sync meet it: the latency of one
// dependent load by working-set size (a random pointer chase, one cache line per node), with
// 4 KiB pages and with transparent huge pages, and the cost of touching fresh anonymous memory
// (the page faults a large sync takes) with 4 KiB and huge pages.
//
//   cc -O2 -o machine machine.c && ./machine        # prints a markdown table; ~40 s
//
// A check reads at least one member's key: once the keys outgrow the L2 cache, each such read
// is one of these loads. Numbers only; see benchmarks/FINDINGS.md for what they explain.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) { // splitmix64
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void *map(size_t bytes, int huge) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    if (huge) madvise(p, bytes, MADV_HUGEPAGE);
    return p;
}

// Nanoseconds per load of a chase through `mb` MiB in one random cycle of 64-byte nodes.
static double chase(size_t mb, int huge) {
    size_t n = mb * 1024 * 1024 / 64, bytes = n * 64;
    char *buf = map(bytes, huge);
    size_t *order = malloc(n * sizeof *order);
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = next() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < n; i++) *(void **)(buf + order[i] * 64) = buf + order[(i + 1) % n] * 64;
    free(order);
    void *p = buf;
    for (size_t i = 0; i < n; i++) p = *(void **)p; // warm: every node once
    size_t loads = 10000000;
    double t0 = now();
    for (size_t i = 0; i < loads; i++) p = *(void **)p;
    double ns = (now() - t0) * 1e9 / (double)loads;
    if (p == NULL) puts(""); // keeps the chase
    munmap(buf, bytes);
    return ns;
}

// Microseconds per 4 KiB touched in fresh anonymous memory (median of `rounds` maps of `mb`
// MiB), and the unmap's milliseconds.
static void touch(size_t mb, int huge, int rounds, double *us_per_page, double *unmap_ms) {
    double t[16], u[16];
    size_t bytes = mb * 1024 * 1024;
    for (int r = 0; r < rounds; r++) {
        char *p = map(bytes, huge);
        double t0 = now();
        for (size_t i = 0; i < bytes; i += 4096) p[i] = 1;
        double t1 = now();
        munmap(p, bytes);
        t[r] = (t1 - t0) * 1e6 / (double)(bytes / 4096);
        u[r] = (now() - t1) * 1e3;
    }
    for (int i = 0; i < rounds; i++)
        for (int j = i + 1; j < rounds; j++) {
            if (t[j] < t[i]) { double x = t[i]; t[i] = t[j]; t[j] = x; }
            if (u[j] < u[i]) { double x = u[i]; u[i] = u[j]; u[j] = x; }
        }
    *us_per_page = t[rounds / 2];
    *unmap_ms = u[rounds / 2];
}

int main(void) {
    const size_t sizes[] = {1, 2, 4, 8, 16, 64, 256};
    puts("Dependent load latency (random pointer chase, one 64-byte node per cache line), ns per load:\n");
    puts("| working set | 4 KiB pages | huge pages (MADV_HUGEPAGE) |");
    puts("| ---: | ---: | ---: |");
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        printf("| %zu MiB | %.0f | %.0f |\n", sizes[i], chase(sizes[i], 0), chase(sizes[i], 1));
    double a, b, c, d;
    touch(512, 0, 5, &a, &b);
    touch(512, 1, 5, &c, &d);
    puts("\nTouching fresh anonymous memory (page faults), 512 MiB, median of 5 rounds:\n");
    puts("| pages | µs per 4 KiB touched | munmap |");
    puts("| --- | ---: | ---: |");
    printf("| 4 KiB | %.2f | %.0f ms |\n", a, b);
    printf("| huge (MADV_HUGEPAGE) | %.2f | %.0f ms |\n", c, d);
    return 0;
}
