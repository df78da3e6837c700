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

    /// Lets one body be decompressed (and decoded) at a time: its size is bounded by the limit,
    /// but not by what was sent, so concurrent syncs of small bombs could otherwise claim
    /// the limit each at once.
    static let oneAtATime = NSLock()

    /// The first allocation's size: the last member's size from its trailer (ISIZE, little
    /// endian, modulo 2^32: the whole body's for one member, as most encoders write), if
    /// deflate could have made it from these bytes (at most ~1032:1), and at least 4 times
    /// the compressed size. Only a guess: the buffer grows, and never past the limit.
    static func sizeHint(_ bytes: UnsafeRawBufferPointer) -> Int {
        let atLeast = bytes.count.multipliedReportingOverflow(by: 4).overflow ? Int.max : bytes.count * 4
        guard bytes.count >= 18 else { return atLeast }
        var isize = 0
        for i in 1...4 { isize = isize << 8 | Int(bytes[bytes.count - i]) }
        return isize / 1032 <= bytes.count ? max(isize, atLeast) : atLeast
    }

    /// The decompressed body: one gzip member or several back to back, at most `limit` bytes.
    /// The `Data` owns zlib's output buffer (no copy).
    static func gunzip(_ bytes: UnsafeRawBufferPointer, limit: Int) -> Result<Data, Failure> {
        guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), !bytes.isEmpty else {
            return .failure(.truncated(offset: 0))
        }
        let r = authz_gunzip(base, bytes.count, limit, sizeHint(bytes))
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
