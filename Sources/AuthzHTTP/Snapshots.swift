import AuthzCore
import AuthzStore
internal import CAuthzMHD
import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One whole state the server answers from: the directory (which carries its compiled
/// policy) and the revision that names it. Immutable; a change publishes a new one.
final class Snapshot: Sendable {
    let directory: Directory
    let revision: UInt64
    /// Policy compiled and membership data loaded (`/readyz`).
    let ready: Bool
    /// Increases with every publication; readers compare it with their cached copy.
    let generation: UInt64

    init(directory: Directory, revision: UInt64, ready: Bool, generation: UInt64) {
        self.directory = directory
        self.revision = revision
        self.ready = ready
        self.generation = generation
    }
}

/// Publishes snapshots to the request threads without a lock on the read path.
///
/// The scheme: writers (data publish, policy reload) are serialized by `writer` and may take
/// as long as they need while building the next snapshot, without blocking anyone. Then, for
/// an instant, under `published`, they store the new snapshot and bump `generation` (an
/// atomic, release ordering). Each request thread keeps its own strong reference to the
/// snapshot it last used, in thread-local storage (a pthread key, one per store). A request
/// loads `generation` (acquire): when it equals the cached snapshot's, which is nearly
/// always, the thread answers from its cache with no lock and no shared write (not even a
/// reference count on a shared object). Only on the first request after a swap does a thread
/// take `published` to pick up the new snapshot, a short critical section that never
/// contends with a slow writer. Every answer comes from one snapshot, held for the whole
/// request, so an answer never mixes two policies or two data revisions. An old snapshot is
/// freed once every thread that cached it has moved on (or exited: the key's destructor
/// releases the cache).
final class SnapshotStore: Sendable {
    private let generation: Atomic<UInt64>
    private let published: Mutex<Snapshot>
    private let writer = Mutex<Void>(())
    private let key: pthread_key_t
    /// Where replaced snapshots are released, off the request threads.
    static let reclaimer = Reclaimer()

    /// A thread's cached snapshot. Touched only by its own thread.
    private final class ThreadCache {
        var snapshot: Snapshot
        init(_ snapshot: Snapshot) { self.snapshot = snapshot }
    }

    init(directory: Directory, ready: Bool) {
        let first = Snapshot(directory: directory, revision: 1, ready: ready, generation: 1)
        generation = Atomic(1)
        published = Mutex(first)
        key = makeReleasingThreadKey()
    }

    deinit {
        // Threads still holding a cache for this key leak it; the server stops its threads
        // (running the destructor) before the store goes away.
        pthread_key_delete(key)
    }

    /// The latest snapshot, read without the lock (see the type's comment). `body` must not
    /// call `withCurrent` again: the snapshot it was given is borrowed from the thread's cache,
    /// which a nested call could replace.
    @inline(__always)
    func withCurrent<R>(_ body: (Snapshot) throws -> R) rethrows -> R {
        let wanted = generation.load(ordering: .acquiring)
        if let raw = pthread_getspecific(key) {
            let cache = Unmanaged<ThreadCache>.fromOpaque(raw)
            let hit = cache._withUnsafeGuaranteedRef { $0.snapshot.generation == wanted }
            if hit {
                // Borrowed, not retained: this thread's cache holds it and only this thread
                // replaces it, which cannot happen while `body` runs (withCurrent is never
                // nested). A retain here was an atomic write to the one object every pool
                // thread uses, on every request.
                return try cache._withUnsafeGuaranteedRef { c in
                    try Unmanaged.passUnretained(c.snapshot)._withUnsafeGuaranteedRef { try body($0) }
                }
            }
            let fresh = published.withLock { $0 }
            let previous = cache._withUnsafeGuaranteedRef { c in
                defer { c.snapshot = fresh }
                return c.snapshot
            }
            // The last reference to an old directory may be this one: freeing a million
            // entries would stall this request thread, so the release happens elsewhere.
            SnapshotStore.reclaimer.release(previous)
            return try body(fresh)
        }
        let fresh = published.withLock { $0 }
        let cache = Unmanaged.passRetained(ThreadCache(fresh))
        pthread_setspecific(key, cache.toOpaque())
        return try body(fresh)
    }

    /// The latest snapshot, under the lock (for writers and rare readers).
    var current: Snapshot { published.withLock { $0 } }

    /// Builds the next snapshot from the current one and publishes it, serialized with every
    /// other writer. `body` returns nil to publish nothing.
    @discardableResult
    func update<E: Error>(
        _ body: (Snapshot) throws(E) -> (directory: Directory, revision: UInt64?, ready: Bool)?
    ) throws(E) -> Snapshot? {
        try writer.withLock { _ throws(E) -> Snapshot? in
            let base = current
            guard let next = try body(base) else { return nil }
            let snapshot = Snapshot(
                directory: next.directory, revision: next.revision ?? base.revision + 1,
                ready: next.ready, generation: base.generation + 1)
            published.withLock { $0 = snapshot }
            generation.store(snapshot.generation, ordering: .releasing)
            return snapshot
        }
    }
}

/// A thread of its own, below the request threads' priority (SCHED_IDLE, as the sync thread),
/// that drops the last reference to replaced snapshots: freeing a million-member directory
/// takes a core for a second, and at normal priority (a Dispatch queue's worker, whatever its
/// QoS, on Linux) that second came out of the checks' latency. After a large free it hands
/// the freed pages back to the system (`MembershipSync.returnFreedMemory`).
final class Reclaimer: Sendable {
    static let threadName = "authz-reclaim"
    /// What the thread does on a round: drop snapshots, or (tests) run a closure there.
    private enum Job {
        case drop(Snapshot)
        case run(@Sendable () -> Void)
    }
    private let queue = Mutex<[Job]>([])
    private let wake = DispatchSemaphore(value: 0)

    init() {
        Thread.detachNewThread { [self] in
            // Named, so that top and /proc tell it from the pool threads.
            authz_name_thread(Reclaimer.threadName)
            authz_lower_thread_priority(10)
            while true {
                wake.wait()
                // Again on every round, after the wait: a sync past its idle-class limit raises
                // every idle-class thread of the process, this one included (BackgroundWork),
                // most likely while it waits, and the free it then wakes for must not run at
                // normal priority.
                authz_lower_thread_priority(10)
                var batch = queue.withLock { q in
                    defer { q = [] }
                    return q
                }
                let large = batch.contains { if case .drop(let s) = $0 { s.directory.counts.members > 10_000 } else { false } }
                for case .run(let body) in batch { body() }
                batch = []
                if large { MembershipSync.returnFreedMemory() }
            }
        }
    }

    func release(_ snapshot: Snapshot) {
        queue.withLock { $0.append(.drop(snapshot)) }
        wake.signal()
    }

    /// Runs `body` on the reclaimer's thread, on its next round (for tests: what priority the
    /// work of a round gets).
    func onItsThread(_ body: @escaping @Sendable () -> Void) {
        queue.withLock { $0.append(.run(body)) }
        wake.signal()
    }
}
