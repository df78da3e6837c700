#include "CAuthzGzip.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

// zlib counts in `uInt` (32 bits): feed it at most this much at a time.
#define AUTHZ_ZLIB_STEP ((size_t)1 << 30)

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

authz_gunzip_result authz_gunzip(const uint8_t *input, size_t count, size_t limit, size_t size_hint) {
    authz_gunzip_result r = {AUTHZ_GUNZIP_OK, NULL, 0, 0, NULL};
    if (count == 0) {
        r.status = AUTHZ_GUNZIP_TRUNCATED;
        return r;
    }
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) { // 16: gzip wrapper only
        r.status = AUTHZ_GUNZIP_NO_MEMORY;
        return r;
    }
    // Room for one byte past the limit: reaching it is how "too large" shows.
    size_t most = limit < SIZE_MAX ? limit + 1 : limit;
    size_t capacity = size_hint > 0 ? size_hint : (count > SIZE_MAX / 4 ? SIZE_MAX : count * 4);
    if (capacity < 4096) capacity = 4096;
    capacity = min_size(capacity, most);
    uint8_t *out = malloc(capacity);
    if (!out) {
        inflateEnd(&z);
        r.status = AUTHZ_GUNZIP_NO_MEMORY;
        return r;
    }
    size_t in_at = 0, out_at = 0;
    int ended = 0; // the last member read so far is complete
    for (;;) {
        if (out_at == capacity) {
            if (capacity == most) { // past the limit (unreachable: checked after each inflate)
                r.status = AUTHZ_GUNZIP_TOO_LARGE;
                break;
            }
            size_t grown = capacity > most / 2 ? most : capacity * 2;
            uint8_t *bigger = realloc(out, grown);
            if (!bigger) {
                r.status = AUTHZ_GUNZIP_NO_MEMORY;
                break;
            }
            out = bigger;
            capacity = grown;
        }
        z.next_in = (Bytef *)(input + in_at);
        z.avail_in = (uInt)min_size(count - in_at, AUTHZ_ZLIB_STEP);
        z.next_out = out + out_at;
        z.avail_out = (uInt)min_size(capacity - out_at, AUTHZ_ZLIB_STEP);
        int ret = inflate(&z, Z_NO_FLUSH);
        in_at += (size_t)(z.next_in - (input + in_at));
        out_at += (size_t)(z.next_out - (out + out_at));
        if (out_at > limit) {
            r.status = AUTHZ_GUNZIP_TOO_LARGE;
            break;
        }
        if (ret == Z_STREAM_END) {
            ended = 1;
            if (in_at == count) break;
            inflateReset(&z); // another member follows
            ended = 0;
            continue;
        }
        if (ret == Z_DATA_ERROR) {
            r.status = AUTHZ_GUNZIP_CORRUPT;
            r.message = z.msg;
            break;
        }
        if (ret == Z_MEM_ERROR) {
            r.status = AUTHZ_GUNZIP_NO_MEMORY;
            break;
        }
        if (ret == Z_BUF_ERROR || ret == Z_OK) {
            if (in_at == count && z.avail_out > 0) break; // input gone mid-member
            continue;
        }
        r.status = AUTHZ_GUNZIP_CORRUPT; // Z_NEED_DICT, Z_STREAM_ERROR: not a gzip body
        r.message = z.msg;
        break;
    }
    inflateEnd(&z);
    r.consumed = in_at;
    if (r.status == AUTHZ_GUNZIP_OK && !ended) r.status = AUTHZ_GUNZIP_TRUNCATED;
    if (r.status != AUTHZ_GUNZIP_OK) {
        free(out);
        return r;
    }
    if (out_at < capacity && out_at > 0) { // give back what the first guess overshot
        uint8_t *fitted = realloc(out, out_at);
        if (fitted) out = fitted;
    }
    r.bytes = out;
    r.count = out_at;
    return r;
}

size_t authz_gzip_bound(size_t count) { // callers pass slices of a few MiB: no overflow
    // deflateBound for the default memory level, plus the gzip header and trailer (18 bytes),
    // and room for the 1 GiB steps below (a stored block's 5 bytes each).
    return count + (count >> 12) + (count >> 14) + (count >> 25) + 13 + 18 + 5 * (count / AUTHZ_ZLIB_STEP + 1);
}

size_t authz_gzip(const uint8_t *input, size_t count, int level, uint8_t *output, size_t capacity) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) return 0;
    size_t in_at = 0, out_at = 0;
    int ret;
    do {
        z.next_in = (Bytef *)(count > 0 ? input + in_at : input);
        z.avail_in = (uInt)min_size(count - in_at, AUTHZ_ZLIB_STEP);
        z.next_out = output + out_at;
        z.avail_out = (uInt)min_size(capacity - out_at, AUTHZ_ZLIB_STEP);
        int last = count - in_at <= AUTHZ_ZLIB_STEP;
        ret = deflate(&z, last ? Z_FINISH : Z_NO_FLUSH);
        in_at += (size_t)(z.next_in - (input + in_at));
        out_at += (size_t)(z.next_out - (output + out_at));
        if (ret == Z_STREAM_ERROR || (ret == Z_BUF_ERROR && out_at == capacity)) {
            deflateEnd(&z);
            return 0;
        }
    } while (ret != Z_STREAM_END);
    deflateEnd(&z);
    return out_at;
}
