import AuthzCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The one writer of membership data: validates a batch against the current directory,
/// commits it durably, and only then publishes the new snapshot. Batches are serialized;
/// readers never wait for it, they keep answering from the snapshot they hold.
public final class MembershipSync: @unchecked Sendable {
    public enum Mode: String, Sendable { case apply, replace }

    public struct Outcome: Sendable, Equatable {
        public var revision: Int64
        public var upserted: Int
        public var deleted: Int
        /// Time spent validating and building the new directory, and the rest (committing).
        /// In a replace the two overlap: `commit` is then the wait beyond validation.
        public var validation: Duration = .zero
        public var commit: Duration = .zero
        public init(revision: Int64, upserted: Int, deleted: Int) {
            self.revision = revision
            self.upserted = upserted
            self.deleted = deleted
        }
        public static func == (a: Outcome, b: Outcome) -> Bool {
            a.revision == b.revision && a.upserted == b.upserted && a.deleted == b.deleted
        }
    }

    public enum Failure: Error, Sendable {
        /// The batch is invalid; nothing changed.
        case invalid([DataError])
        /// `if_revision` did not match the current revision; nothing changed.
        case conflict(current: Int64)
        /// The store could not commit; nothing was published.
        case storage(String)
        /// A store write failed past its commit point: the batch may be on disk or not, and
        /// the store may no longer match what is served. The data served stays as it was, and
        /// later syncs are refused (`syncsRefused`) until a restart loads the store.
        case storeStateUnknown(String)
        /// Refused, nothing changed: an earlier sync left the store's state unknown (its
        /// message), and only a restart can tell what the store holds.
        case syncsRefused(String)
    }

    public let store: MembershipStore
    private let lock = NSLock()
    private var directory: Directory
    private var revision: Int64
    /// How long opening took: reading the store into the directory, then finishing it.
    public private(set) var loadTimes: (read: Duration, build: Duration) = (.zero, .zero)
    /// Set once a write failed past its commit point (`Failure.storeStateUnknown`).
    private var stateUnknown: String?
    /// Called with every new (directory, revision), under the writer lock, after the commit.
    private let publish: @Sendable (Directory, Int64) -> Void

    /// Loads the store and builds the directory for `policy`; `publish` receives it at once.
    public init(store: MembershipStore, policy: CompiledPolicy, publish: @escaping @Sendable (Directory, Int64) -> Void) throws {
        self.store = store
        self.publish = publish
        let clock = ContinuousClock()
        let t0 = clock.now
        // Streamed: each row is validated into the directory as it is read, so the records
        // never sit in memory all at once (a million members would be several hundred MB).
        // The store's reading thread hands the rows over as bytes (strings allocated on one
        // thread and freed on another contend in malloc), and builds the users itself while
        // it waits for this thread (see `load(buildingUsers:_:)`).
        // The store remembers the sizes it held at its last load or replace, if no batch was
        // applied since; else it counts them (a scan of every table).
        let expected = try store.expectedSizes()
        var withoutUsers = expected
        withoutUsers.users = 0
        var builder = DirectoryBuilder(policy: policy, expected: withoutUsers)
        var sizes = DirectoryBuilder.Expected()
        let (revision, users, userSizes) = try store.load(buildingUsers: expected) { record in
            sizes.count(record)
            // The users stand after the orgs, as the store's order has them.
            if case .org = record {} else { builder.placeUsers() }
            builder.add(record)
        }
        sizes.users = userSizes.users
        sizes.userKeyBytes = userSizes.userKeyBytes
        sizes.userPayloadBytes = userSizes.userPayloadBytes
        let t1 = clock.now
        do {
            directory = try builder.finish(users: users)
            loadTimes = (read: t1 - t0, build: clock.now - t1)
        } catch {
            throw Failure.storage("the store at \(store.path) does not fit policy `\(policy.name)`: \(error.errors.prefix(5).map(\.description).joined(separator: "; "))")
        }
        self.revision = revision
        publish(directory, revision)
        // For the next start, if no batch comes first; not worth failing a start over.
        try? store.rememberSizes(sizes, revision: revision)
        store.releaseMemory()
        Self.returnFreedMemory()
    }

    /// After a large batch, the decoded records and the replaced directory are freed, but
    /// glibc keeps the pages in its arenas: hand them back so the resident size reflects
    /// what the service holds.
    public static func returnFreedMemory() {
        #if canImport(Glibc)
        // `malloc_trim` is glibc's (malloc.h, which Swift's Glibc module does not export).
        typealias Trim = @convention(c) (Int) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return }
        let trim = unsafeBitCast(symbol, to: Trim.self)
        // A thread of its own, which inherits the caller's priority (a sync's is lowered).
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: 1)
            _ = trim(0)
        }
        #endif
    }

    /// The current revision and directory.
    public var current: (directory: Directory, revision: Int64) {
        lock.lock()
        defer { lock.unlock() }
        return (directory, revision)
    }

    /// Validates, commits and publishes one batch: all or nothing.
    public func sync(_ records: [LocatedRecord], mode: Mode, ifRevision: Int64? = nil) -> Result<Outcome, Failure> {
        lock.lock()
        defer { lock.unlock() }
        if let stateUnknown { return .failure(.syncsRefused(stateUnknown)) }
        if let ifRevision, ifRevision != revision { return .failure(.conflict(current: revision)) }
        let clock = ContinuousClock()
        let t0 = clock.now
        let newRevision = revision + 1
        let next: Directory
        let stats: Directory.ApplyStats
        var validation = Duration.zero
        do {
            switch mode {
            case .apply:
                (next, stats) = try directory.applying(records)
                validation = clock.now - t0
                try store.apply(records, revision: newRevision, previous: revision)
            case .replace:
                // The new directory is built while the store writes the rows: a replace of a
                // million memberships spends seconds in each.
                // Applying a large batch to an empty directory sizes the maps for it first and
                // fits the shards after (see `Directory.applying`).
                let empty = Directory(policy: directory.policy)
                (next, stats, validation) = try store.replace(with: records, revision: newRevision, previous: revision) {
                    let start = ContinuousClock.now
                    let (next, stats) = try empty.applying(records)
                    return (next, stats, ContinuousClock.now - start)
                }
            }
        } catch let error as DataErrors {
            return .failure(.invalid(error.errors))
        } catch MembershipStore.StoreError.stateUnknown(let message) {
            stateUnknown = "the sync to revision \(newRevision) failed past the store's commit point: \(message)"
            return .failure(.storeStateUnknown(stateUnknown!))
        } catch {
            return .failure(.storage("\(error)"))
        }
        var outcome = Outcome(revision: newRevision, upserted: stats.upserted, deleted: stats.deleted)
        outcome.validation = validation
        outcome.commit = clock.now - t0 - validation
        if mode == .replace { outcome.deleted = directory.countRemoved(in: next) }
        directory = next
        revision = newRevision
        publish(next, newRevision)
        if records.count > 10_000 {
            store.releaseMemory()
            Self.returnFreedMemory()
        }
        return .success(outcome)
    }

    /// Rebinds the data to a reloaded policy, publishing it at the same revision; fails,
    /// changing nothing, if the data uses names the new policy lacks.
    public func rebind(to policy: CompiledPolicy) -> Result<Directory, DataErrors> {
        lock.lock()
        defer { lock.unlock() }
        do {
            let next = try directory.rebound(to: policy)
            directory = next
            publish(next, revision)
            return .success(next)
        } catch {
            return .failure(error)
        }
    }
}
