#ifndef CAUTHZGZIP_H
#define CAUTHZGZIP_H
// gzip bodies (RFC 1952) through zlib: `POST /v1/sync` accepts `Content-Encoding: gzip`, and
// `authz sync` sends it. Whole-buffer calls, because both sides hold the whole body anyway;
// the loops live here because zlib's init functions are macros Swift cannot call.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum authz_gunzip_status {
    AUTHZ_GUNZIP_OK = 0,
    /// The decompressed bytes would exceed the limit (nothing more was decompressed).
    AUTHZ_GUNZIP_TOO_LARGE = 1,
    /// Not gzip, or damaged (a bad header, block or check value): `message` says what.
    AUTHZ_GUNZIP_CORRUPT = 2,
    /// The input ends inside a member.
    AUTHZ_GUNZIP_TRUNCATED = 3,
    /// No memory for the output (or zlib's state).
    AUTHZ_GUNZIP_NO_MEMORY = 4,
} authz_gunzip_status;

typedef struct authz_gunzip_result {
    authz_gunzip_status status;
    /// The decompressed bytes (malloc'd; the caller frees them), on success only.
    uint8_t *bytes;
    size_t count;
    /// Compressed bytes read before the error (its offset in the input), or all of them.
    size_t consumed;
    /// zlib's description of a corrupt input (static storage), or NULL.
    const char *message;
} authz_gunzip_result;

/// Decompresses `input`: one gzip member or several back to back (as `cat a.gz b.gz` makes,
/// and as `authz_gzip` output compressed in slices is). Empty input is an error (truncated).
/// `size_hint` (may be 0) is the expected output size, for the first allocation.
authz_gunzip_result authz_gunzip(const uint8_t *input, size_t count, size_t limit, size_t size_hint);

/// Compresses `input` as one gzip member at `level` (1 fastest .. 9 smallest) into `output`,
/// which must hold `authz_gzip_bound(count)` bytes. Returns the bytes written, 0 on failure.
size_t authz_gzip(const uint8_t *input, size_t count, int level, uint8_t *output, size_t capacity);

/// The most bytes `authz_gzip` can write for `count` bytes of input.
size_t authz_gzip_bound(size_t count);

#ifdef __cplusplus
}
#endif

#endif
