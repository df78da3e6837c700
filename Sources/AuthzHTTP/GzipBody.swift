import CAuthzGzip
import Foundation

/// A `Content-Encoding: gzip` request body (`POST /v1/sync`), decompressed whole through zlib.
enum GzipBody {
    enum Failure: Error, Equatable {
        /// More than the limit once decompressed.
        case tooLarge
        /// Not gzip or damaged, at this offset of the compressed bytes.
        case corrupt(offset: Int, detail: String)
        /// The compressed bytes end inside a member.
        case truncated(offset: Int)
        case noMemory
    }

    /// The decompressed body: one gzip member or several back to back, at most `limit` bytes.
    /// The `Data` owns zlib's output buffer (no copy).
    static func gunzip(_ bytes: UnsafeRawBufferPointer, limit: Int) -> Result<Data, Failure> {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), !bytes.isEmpty else {
            return .failure(.truncated(offset: 0))
        }
        // A single member's trailer ends with its size modulo 2^32: a hint for the first
        // allocation only (it is the client's word, and the C side caps it at the limit).
        var hint = 0
        if bytes.count >= 18 {
            for i in (1...4).reversed() { hint = hint << 8 | Int(bytes[bytes.count - i]) }
        }
        let r = authz_gunzip(base, bytes.count, limit, hint)
        switch r.status {
        case AUTHZ_GUNZIP_OK:
            return .success(Data(bytesNoCopy: r.bytes, count: r.count, deallocator: .free))
        case AUTHZ_GUNZIP_TOO_LARGE:
            return .failure(.tooLarge)
        case AUTHZ_GUNZIP_TRUNCATED:
            return .failure(.truncated(offset: r.consumed))
        case AUTHZ_GUNZIP_CORRUPT:
            return .failure(.corrupt(offset: r.consumed, detail: r.message.map { String(cString: $0) } ?? "not gzip data"))
        default:
            return .failure(.noMemory)
        }
    }
}
