#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One reusable byte buffer per request thread, in thread-local storage (a pthread key), so
/// the hot path can write its answer without allocating: the buffer keeps its capacity from
/// one request to the next. Touched only by its own thread; the key's destructor frees it
/// when the thread exits.
final class ThreadScratch: Sendable {
    private let key: pthread_key_t

    private final class Box {
        var bytes: [UInt8] = []
        init() { bytes.reserveCapacity(1024) }
    }

    init() {
        key = makeReleasingThreadKey()
    }

    deinit {
        // As for SnapshotStore: the server stops its threads before the engine goes away.
        pthread_key_delete(key)
    }

    /// Runs `body` with this thread's buffer. The buffer is moved out of its box for the call
    /// (so `body` holds the only reference and appends in place) and moved back after.
    @inline(__always)
    func withBuffer<R>(_ body: (inout [UInt8]) throws -> R) rethrows -> R {
        let box: Unmanaged<Box>
        if let raw = pthread_getspecific(key) {
            box = Unmanaged<Box>.fromOpaque(raw)
        } else {
            box = Unmanaged.passRetained(Box())
            pthread_setspecific(key, box.toOpaque())
        }
        return try box._withUnsafeGuaranteedRef { b in
            var bytes: [UInt8] = []
            swap(&bytes, &b.bytes)
            defer { swap(&bytes, &b.bytes) }
            return try body(&bytes)
        }
    }
}

/// A pthread key whose per-thread value is a retained Swift object (`Unmanaged.passRetained`),
/// released by the key's destructor when the thread exits.
func makeReleasingThreadKey() -> pthread_key_t {
    var key = pthread_key_t()
    let rc = pthread_key_create(&key) { pointer in
        guard let pointer else { return }
        Unmanaged<AnyObject>.fromOpaque(pointer).release()
    }
    precondition(rc == 0, "pthread_key_create failed: \(rc)")
    return key
}
