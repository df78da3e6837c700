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
            // A large page cache: a replace of a million rows rewrites most of the B-trees,
            // and evicting dirty pages mid-transaction multiplies the writes.
            try db.execute(sql: "PRAGMA cache_size = -262144")
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
            func add(_ r: AuthzCore.Record) { body(r) }
            let cursor1 = try Row.fetchCursor(db, sql: "SELECT id, personal, suspended, suspended_until FROM orgs")
            while let row = try cursor1.next() {
                add(.org(.init(id: row[0], personal: row[1], suspended: row[2], suspendedUntil: time(row[3]))))
            }
            let cursor2 = try Row.fetchCursor(db, sql: "SELECT id, email, email_verified FROM users")
            while let row = try cursor2.next() {
                add(.user(.init(id: row[0], email: row[1], emailVerified: row[2])))
            }
            let cursor3 = try Row.fetchCursor(db, sql: "SELECT org, id, permissions FROM roles")
            while let row = try cursor3.next() {
                add(.role(.init(org: row[0], id: row[1], permissions: list(row[2]))))
            }
            let cursor4 = try Row.fetchCursor(db, sql: "SELECT org, user, role, assignments FROM members")
            while let row = try cursor4.next() {
                add(.member(.init(org: row[0], user: row[1], role: row[2], assignments: list(row[3]))))
            }
            let cursor5 = try Row.fetchCursor(db, sql: "SELECT id, org, user, permissions, expires_at FROM api_keys")
            while let row = try cursor5.next() {
                add(.apiKey(.init(id: row[0], org: row[1], user: row[2], permissions: list(row[3]), expiresAt: time(row[4]))))
            }
            let cursor6 = try Row.fetchCursor(db, sql: "SELECT id, org, email, role, assignments, status, expires_at FROM invitations")
            while let row = try cursor6.next() {
                add(.invitation(.init(id: row[0], org: row[1], email: row[2], role: row[3], assignments: list(row[4]),
                                      status: row[5], expiresAt: time(row[6]))))
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
            for r in records { try write(r.record, db) }
            try db.execute(sql: "UPDATE meta SET value = ? WHERE key = 'revision'", arguments: [revision])
        }
    }

    /// Replaces the whole state with `records` (already the complete, valid state).
    public func replace(with records: [AuthzCore.Record], revision: Int64, previous: Int64) throws {
        try pool.write { db in
            let found = try Self.revision(db)
            guard found == previous else { throw StoreError.revisionMoved(expected: previous, found: found) }
            for table in ["orgs", "users", "roles", "members", "api_keys", "invitations"] {
                try db.execute(sql: "DELETE FROM \(table)")
            }
            // Bulk load: secondary indexes are dropped and built again after the inserts
            // (a sort), instead of taking a million random inserts each. Same transaction.
            try db.execute(sql: Self.dropIndexes)
            // In (nearly) primary-key order: appending to a B-tree is far cheaper than random
            // inserts. Sorted by kind and the first bytes of the key, as plain integers, so the
            // sort moves no reference-counted values.
            var order = records.indices.map { (records[$0].sortPrefix, Int32($0)) }
            order.sort { $0.0 < $1.0 }
            for (_, i) in order { try write(records[Int(i)], db) }
            try db.execute(sql: Self.createIndexes)
            try db.execute(sql: "UPDATE meta SET value = ? WHERE key = 'revision'", arguments: [revision])
        }
    }

    /// One record, with the same semantics as `Directory.applying`: upsert replaces, delete
    /// cascades (org: its members, roles, keys, invitations; user: its memberships and keys).
    private func write(_ record: AuthzCore.Record, _ db: Database) throws {
        func run(_ sql: String, _ args: StatementArguments) throws {
            // Arguments are built here, in the right number: skip GRDB's per-row validation.
            let statement = try db.cachedStatement(sql: sql)
            statement.setUncheckedArguments(args)
            try statement.execute()
        }
        switch record {
        case .org(let r):
            try run("INSERT OR REPLACE INTO orgs VALUES (?, ?, ?, ?)", [r.id, r.personal, r.suspended, r.suspendedUntil?.description])
        case .user(let r):
            try run("INSERT OR REPLACE INTO users VALUES (?, ?, ?)", [r.id, r.email, r.emailVerified])
        case .role(let r):
            try run("INSERT OR REPLACE INTO roles VALUES (?, ?, ?)", [r.org, r.id, r.permissions.joined(separator: " ")])
        case .member(let r):
            try run("INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?)", [r.org, r.user, r.role, r.assignments.joined(separator: " ")])
        case .apiKey(let r):
            try run("INSERT OR REPLACE INTO api_keys VALUES (?, ?, ?, ?, ?)",
                    [r.id, r.org, r.user, r.permissions.joined(separator: " "), r.expiresAt?.description])
        case .invitation(let r):
            try run("INSERT OR REPLACE INTO invitations VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [r.id, r.org, r.email, r.role, r.assignments.joined(separator: " "), r.status, r.expiresAt?.description])
        case .delete(.org(let id)):
            for sql in ["DELETE FROM orgs WHERE id = ?", "DELETE FROM members WHERE org = ?", "DELETE FROM roles WHERE org = ?",
                        "DELETE FROM api_keys WHERE org = ?", "DELETE FROM invitations WHERE org = ?"] {
                try run(sql, [id])
            }
        case .delete(.user(let id)):
            for sql in ["DELETE FROM users WHERE id = ?", "DELETE FROM members WHERE user = ?", "DELETE FROM api_keys WHERE user = ?"] {
                try run(sql, [id])
            }
        case .delete(.member(let org, let user)):
            try run("DELETE FROM members WHERE org = ? AND user = ?", [org, user])
        case .delete(.role(let org, let id)):
            try run("DELETE FROM roles WHERE org = ? AND id = ?", [org, id])
        case .delete(.apiKey(let id)):
            try run("DELETE FROM api_keys WHERE id = ?", [id])
        case .delete(.invitation(let id)):
            try run("DELETE FROM invitations WHERE id = ?", [id])
        }
    }
}

private func list(_ s: String) -> [String] {
    s.isEmpty ? [] : s.split(separator: " ").map(String.init)
}

private func time(_ s: String?) -> Timestamp? {
    s.flatMap(Timestamp.init(rfc3339:))
}

extension AuthzCore.Record {
    /// The kind (top 3 bits) and the first bytes of the primary key (big-endian), so that
    /// integer order approximates the table's key order.
    fileprivate var sortPrefix: UInt64 {
        let (kind, first): (UInt64, String)
        switch key {
        case .org(let id): (kind, first) = (0, id)
        case .user(let id): (kind, first) = (1, id)
        case .role(let org, _): (kind, first) = (2, org)
        case .member(let org, _): (kind, first) = (3, org)
        case .apiKey(let id): (kind, first) = (4, id)
        case .invitation(let id): (kind, first) = (5, id)
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
