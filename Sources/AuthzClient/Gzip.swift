import CAuthzGzip
import Dispatch
import Foundation

/// gzip for request bodies (`Content-Encoding: gzip`): the input is cut into slices compressed
/// on every core at once, each a gzip member; members back to back are one gzip body (RFC
/// 1952), which the server decompresses in one pass.
enum Gzip {
    /// 4 MiB: a few dozen slices for a large replace, so every core has work, and each slice
    /// long enough that the compression barely suffers (zlib looks back 32 KiB).
    static let slice = 4 << 20

    /// `compress` on a Dispatch thread: it keeps every core busy for up to a second or so,
    /// which must not hold up a Swift concurrency thread of the caller's process.
    static func compressed(_ data: Data, level: Int32 = 1) async -> Data? {
        await withCheckedContinuation { done in
            DispatchQueue.global().async { done.resume(returning: compress(data, level: level)) }
        }
    }

    /// nil if zlib fails (no memory).
    static func compress(_ data: Data, level: Int32 = 1) -> Data? {
        let count = data.count
        let slices = max(1, (count + slice - 1) / slice)
        let parts = PartList(count: slices)
        data.withUnsafeBytes { raw in
            guard let base = raw.baseAddress?.assumingMemoryBound(to: UInt8.self) else {
                parts.store(0, Data(compressing: nil, count: 0, level: level))
                return
            }
            let input = UnsafeSendable(base)
            DispatchQueue.concurrentPerform(iterations: slices) { i in
                let start = i * slice
                parts.store(i, Data(compressing: input.pointer + start, count: min(slice, count - start), level: level))
            }
        }
        var out = Data()
        out.reserveCapacity(parts.items.reduce(0) { $0 + ($1?.count ?? 0) })
        for part in parts.items {
            guard let part else { return nil }
            out.append(part)
        }
        return out
    }

    /// One slot per slice, each written by one worker.
    private final class PartList: @unchecked Sendable {
        var items: [Data?]
        private let lock = NSLock()
        init(count: Int) { items = Array(repeating: nil, count: count) }
        func store(_ i: Int, _ part: Data?) { lock.withLock { items[i] = part } }
    }

    private struct UnsafeSendable: @unchecked Sendable {
        let pointer: UnsafePointer<UInt8>
        init(_ pointer: UnsafePointer<UInt8>) { self.pointer = pointer }
    }
}

private extension Data {
    /// One gzip member of `count` bytes at `input`; nil if zlib fails.
    init?(compressing input: UnsafePointer<UInt8>?, count: Int, level: Int32) {
        let capacity = authz_gzip_bound(count)
        guard let out = malloc(capacity)?.assumingMemoryBound(to: UInt8.self) else { return nil }
        let written = authz_gzip(input, count, level, out, capacity)
        guard written > 0 else {
            free(out)
            return nil
        }
        self.init(bytesNoCopy: realloc(out, written) ?? UnsafeMutableRawPointer(out), count: written, deallocator: .free)
    }
}
