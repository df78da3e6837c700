import AuthzCore
import Foundation
import GRDB

/// The durable copy of the membership data: SQLite through GRDB, in WAL mode with full
/// synchronous commits, so that a batch acknowledged to a client survives a crash or a
/// SIGKILL. One table per record kind; the revision of the last accepted sync sits in `meta`
/// and is written in the same transaction as the data it stamps.
public final class MembershipStore: Sendable {
    public let path: String
    private let pool: DatabasePool

    /// Opens (creating if needed) the store at `path`.
    public init(path: String) throws {
        self.path = path
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        var config = Configuration()
        config.label = "authz-store"
        config.busyMode = .timeout(5)
        config.prepareDatabase { db in
            // WAL (DatabasePool's default) + FULL: a commit is on disk before it returns.
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // A large page cache for the writer: a replace of a million rows rewrites most of
            // the B-trees, and evicting dirty pages mid-transaction multiplies the writes.
            // Readers keep SQLite's default (2 MB): a start-up reads each table once, in order,
            // and a cache as large as the store would only add to the resident size.
            if !db.configuration.readonly {
                try db.execute(sql: "PRAGMA cache_size = -262144")
            }
        }
        pool = try DatabasePool(path: path, configuration: config)
        try Self.migrator.migrate(pool)
    }

    private static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
                INSERT INTO meta (key, value) VALUES ('revision', 0);
                CREATE TABLE orgs (id TEXT PRIMARY KEY NOT NULL, personal INTEGER NOT NULL, suspended INTEGER NOT NULL,
                                   suspended_until TEXT) WITHOUT ROWID;
                CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, email TEXT, email_verified INTEGER NOT NULL) WITHOUT ROWID;
                CREATE TABLE roles (org TEXT NOT NULL, id TEXT NOT NULL, permissions TEXT NOT NULL,
                                    PRIMARY KEY (org, id)) WITHOUT ROWID;
                CREATE TABLE members (org TEXT NOT NULL, user TEXT NOT NULL, role TEXT NOT NULL, assignments TEXT NOT NULL,
                                      PRIMARY KEY (org, user)) WITHOUT ROWID;
                CREATE TABLE api_keys (id TEXT PRIMARY KEY NOT NULL, org TEXT NOT NULL, user TEXT NOT NULL,
                                       permissions TEXT NOT NULL, expires_at TEXT) WITHOUT ROWID;
                CREATE TABLE invitations (id TEXT PRIMARY KEY NOT NULL, org TEXT NOT NULL, email TEXT NOT NULL, role TEXT NOT NULL,
                                          assignments TEXT NOT NULL, status TEXT NOT NULL, expires_at TEXT) WITHOUT ROWID;
                """)
            try db.execute(sql: createIndexes)
        }
        return m
    }

    /// The secondary indexes (for cascading deletes by org and by user).
    static let createIndexes = """
        CREATE INDEX members_user ON members (user);
        CREATE INDEX api_keys_org ON api_keys (org);
        CREATE INDEX api_keys_user ON api_keys (user);
        CREATE INDEX invitations_org ON invitations (org);
        """
    static let dropIndexes = """
        DROP INDEX members_user; DROP INDEX api_keys_org; DROP INDEX api_keys_user; DROP INDEX invitations_org;
        """

    /// Frees SQLite's page caches (up to 256 MB a connection after a bulk read or write):
    /// the service answers from its directory, not from the store.
    public func releaseMemory() {
        pool.releaseMemory()
    }

    /// The revision of the last committed sync (0 for a new store).
    public func revision() throws -> Int64 {
        try pool.read { db in try Self.revision(db) }
    }

    private static func revision(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'revision'") ?? 0
    }

    /// Every record and the revision they are at, in an order that rebuilds the directory.
    public func load() throws -> (records: [LocatedRecord], revision: Int64) {
        var out: [LocatedRecord] = []
        let revision = try load { out.append(LocatedRecord(line: 0, record: $0)) }
        return (out, revision)
    }

    /// How many rows of each kind the store holds, and their key bytes (to size a directory).
    public func expectedSizes() throws -> DirectoryBuilder.Expected {
        try pool.read { db in
            var e = DirectoryBuilder.Expected()
            func count(_ sql: String) throws -> (Int, Int) {
                let row = try Row.fetchOne(db, sql: sql)
                return (row?[0] ?? 0, row?[1] ?? 0)
            }
            // Bytes stored after the keys (emails; an api key's org and user; an invitation's
            // org and email), in the same scan.
            func count(_ sql: String) throws -> (Int, Int, Int) {
                let row = try Row.fetchOne(db, sql: sql)
                return (row?[0] ?? 0, row?[1] ?? 0, row?[2] ?? 0)
            }
            (e.orgs, e.orgKeyBytes) = try count("SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(id AS BLOB))), 0) FROM orgs")
            (e.users, e.userKeyBytes, e.userPayloadBytes) = try count(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(id AS BLOB))), 0), COALESCE(SUM(LENGTH(CAST(email AS BLOB))), 0) FROM users")
            (e.roles, e.roleKeyBytes) = try count("SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(org AS BLOB)) + 1 + LENGTH(CAST(id AS BLOB))), 0) FROM roles")
            (e.members, e.memberKeyBytes) = try count("SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(org AS BLOB)) + 1 + LENGTH(CAST(user AS BLOB))), 0) FROM members")
            (e.apiKeys, e.apiKeyKeyBytes, e.apiKeyPayloadBytes) = try count(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(id AS BLOB))), 0), COALESCE(SUM(LENGTH(CAST(org AS BLOB)) + LENGTH(CAST(user AS BLOB))), 0) FROM api_keys")
            (e.invitations, e.invitationKeyBytes, e.invitationPayloadBytes) = try count(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(id AS BLOB))), 0), COALESCE(SUM(LENGTH(CAST(org AS BLOB)) + LENGTH(CAST(email AS BLOB))), 0) FROM invitations")
            return e
        }
    }

    /// Streams every record, in an order that rebuilds the directory, to `body`, in one read
    /// transaction; returns the revision they are at.
    public func load(_ body: (AuthzCore.Record) -> Void) throws -> Int64 {
        try pool.read { db in
            try RowReader.each(db, "SELECT id, personal, suspended, suspended_until FROM orgs") { r in
                body(.org(.init(id: r.text(0), personal: r.bool(1), suspended: r.bool(2), suspendedUntil: r.timestamp(3))))
            }
            try RowReader.each(db, "SELECT id, email, email_verified FROM users") { r in
                body(.user(.init(id: r.text(0), email: r.optionalText(1), emailVerified: r.bool(2))))
            }
            try RowReader.each(db, "SELECT org, id, permissions FROM roles") { r in
                body(.role(.init(org: r.text(0), id: r.text(1), permissions: r.list(2))))
            }
            try RowReader.each(db, "SELECT org, user, role, assignments FROM members") { r in
                body(.member(.init(org: r.text(0), user: r.text(1), role: r.text(2), assignments: r.list(3))))
            }
            try RowReader.each(db, "SELECT id, org, user, permissions, expires_at FROM api_keys") { r in
                body(.apiKey(.init(id: r.text(0), org: r.text(1), user: r.text(2), permissions: r.list(3), expiresAt: r.timestamp(4))))
            }
            try RowReader.each(db, "SELECT id, org, email, role, assignments, status, expires_at FROM invitations") { r in
                body(.invitation(.init(id: r.text(0), org: r.text(1), email: r.text(2), role: r.text(3), assignments: r.list(4),
                                       status: r.text(5), expiresAt: r.timestamp(6))))
            }
            return try Self.revision(db)
        }
    }

    /// What went wrong committing: the store refused or the revision moved under us.
    public enum StoreError: Error, CustomStringConvertible {
        case revisionMoved(expected: Int64, found: Int64)
        public var description: String {
            switch self {
            case .revisionMoved(let e, let f): "the store is at revision \(f), not \(e)"
            }
        }
    }

    /// Applies a validated batch in one transaction and stamps it `revision`; returns only
    /// once the commit is durable. `previous` guards against a second writer.
    public func apply(_ records: [LocatedRecord], revision: Int64, previous: Int64) throws {
        try pool.write { db in
            let found = try Self.revision(db)
            guard found == previous else { throw StoreError.revisionMoved(expected: previous, found: found) }
            var writer = RowWriter(db)
            for r in records { try writer.write(r.record) }
            try db.execute(sql: "UPDATE meta SET value = ? WHERE key = 'revision'", arguments: [revision])
        }
    }

    /// Replaces the whole state with `batch` (a replace's records, in order) and stamps it
    /// `revision`, while `validate` runs on a second thread: the rows are written as the batch
    /// is validated, and the transaction commits only if `validate` returns. If it throws,
    /// nothing changes and its error is rethrown (a failed store write throws the store's).
    /// Returns `validate`'s result once the commit is durable.
    public func replace<T: Sendable>(with batch: [LocatedRecord], revision: Int64, previous: Int64,
                                     validatingMeanwhile validate: @escaping @Sendable () throws -> T) throws -> T {
        let validation = Concurrently(validate)
        do {
            try pool.write { db in
                let found = try Self.revision(db)
                guard found == previous else { throw StoreError.revisionMoved(expected: previous, found: found) }
                for table in ["orgs", "users", "roles", "members", "api_keys", "invitations"] {
                    try db.execute(sql: "DELETE FROM \(table)")
                }
                // Bulk load: secondary indexes are dropped and built again after the inserts
                // (a sort), instead of taking a million random inserts each. Same transaction.
                // Not when the batch deletes: each cascade would scan whole tables.
                let (order, sorted) = Self.writeOrder(batch)
                if sorted { try db.execute(sql: Self.dropIndexes) }
                var writer = RowWriter(db)
                for (n, i) in order.enumerated() {
                    try writer.write(batch[Int(i)].record)
                    // An invalid batch is usually found early: stop writing for nothing.
                    if n & 0x3FFF == 0, validation.failed { break }
                }
                if sorted { try db.execute(sql: Self.createIndexes) }
                try db.execute(sql: "UPDATE meta SET value = ? WHERE key = 'revision'", arguments: [revision])
                // Throwing here rolls the transaction back.
                _ = try validation.result.get()
            }
        } catch {
            if case .failure(let invalid) = validation.result { throw invalid }
            throw error
        }
        return try validation.result.get()
    }

    /// The order to write a replace's records in. Without deletes, (nearly) primary-key order:
    /// appending to a B-tree is far cheaper than random inserts. Sorted by kind and the first
    /// bytes of the key as plain integers (the sort moves no reference-counted values), then
    /// by position, so that of two records with the same key the later is written last and
    /// wins, as in the directory. A batch with deletes is written as it is: a delete cascades
    /// over what came before it.
    private static func writeOrder(_ batch: [LocatedRecord]) -> (order: [Int32], sorted: Bool) {
        var hasDeletes = false
        var keyed: [(prefix: UInt64, index: Int32)] = []
        keyed.reserveCapacity(batch.count)
        for i in batch.indices {
            let prefix = batch[i].record.sortPrefix()
            if prefix == .max { hasDeletes = true }
            keyed.append((prefix, Int32(i)))
        }
        if hasDeletes { return (batch.indices.map { Int32($0) }, false) }
        keyed.sort { $0.prefix != $1.prefix ? $0.prefix < $1.prefix : $0.index < $1.index }
        return (keyed.map(\.index), true)
    }
}

/// Runs a closure on its own thread at once; `result` waits for it. A thread rather than a
/// Dispatch queue: a new thread inherits the caller's scheduling priority (the sync writer
/// runs below the request threads, and so must its validation).
private final class Concurrently<T: Sendable>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var outcome: Result<T, any Error>?

    init(_ body: @escaping @Sendable () throws -> T) {
        Thread.detachNewThread { [self] in
            let r = Result { try body() }
            lock.withLock { outcome = r }
            done.signal()
        }
    }

    /// Whether it has finished by throwing.
    var failed: Bool {
        lock.withLock { if case .failure = outcome { true } else { false } }
    }

    /// Its result, once it has finished.
    var result: Result<T, any Error> {
        if let r = lock.withLock({ outcome }) { return r }
        done.wait()
        done.signal()
        return lock.withLock { outcome! }
    }
}

extension AuthzCore.Record {
    /// The kind (top 3 bits) and the first bytes of the primary key (big-endian), so that
    /// integer order approximates the table's key order; `.max` for a delete.
    fileprivate borrowing func sortPrefix() -> UInt64 {
        let (kind, first): (UInt64, String)
        switch self {
        case .org(let r): (kind, first) = (0, r.id)
        case .user(let r): (kind, first) = (1, r.id)
        case .role(let r): (kind, first) = (2, r.org)
        case .member(let r): (kind, first) = (3, r.org)
        case .apiKey(let r): (kind, first) = (4, r.id)
        case .invitation(let r): (kind, first) = (5, r.id)
        case .delete: return .max
        }
        var prefix: UInt64 = 0
        var n = 0
        for byte in first.utf8.prefix(8) {
            prefix = prefix << 8 | UInt64(byte)
            n += 1
        }
        prefix <<= UInt64(8 * (8 - n))
        return kind << 61 | prefix >> 3
    }
}
