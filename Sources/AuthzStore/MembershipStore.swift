import AuthzCore
import Foundation
import GRDB
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The durable copy of the membership data: SQLite through GRDB, in WAL mode with full
/// synchronous commits, so that a batch acknowledged to a client survives a crash or a
/// SIGKILL. One table per record kind; the revision of the last accepted sync sits in `meta`
/// and is written in the same transaction as the data it stamps.
public final class MembershipStore: @unchecked Sendable {
    public let path: String
    /// `path` with symbolic links resolved: the file a replace renames over (renaming over
    /// the link would replace the link, not the store, and the lock is taken on this path).
    private let file: String
    /// Guards `pool`, which a replace swaps for one on the new file.
    private let lock = NSLock()
    private var pool: DatabasePool
    /// This process's exclusive hold on the store (see `StoreLock`).
    private let ownership: StoreLock
    /// Tests: where this store's writes fail (see `FailurePoint`).
    let failing = Mutex<FailurePoint?>(nil)

    /// Opens (creating if needed) the store at `path`. Fails if another process has it open.
    public init(path: String) throws {
        self.path = path
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        ownership = try StoreLock(path: path)
        file = ownership.key
        // A replace that was killed before its rename leaves its new file behind: the store
        // is the old state, and the new file is garbage.
        if ownership.first { Self.removeFiles(of: Self.newFilePath(file)) }
        pool = try Self.open(file)
    }

    deinit {
        // Before `ownership` is released: another store of this path may swap the file as
        // soon as this one no longer counts.
        try? pool.close()
    }

    private static func open(_ path: String) throws -> DatabasePool {
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
        let pool = try DatabasePool(path: path, configuration: config)
        // GRDB sets `synchronous = NORMAL` on the writer when it turns WAL on, after
        // `prepareDatabase`: NORMAL may lose the last commits on a power failure. FULL again.
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        try Self.migrator.migrate(pool)
        return pool
    }

    /// The writer's `PRAGMA synchronous` (2 = FULL), for tests.
    func writerSynchronousMode() throws -> Int {
        try withPool { pool in try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 } }
    }

    /// Runs `body` with the current connection pool, which no replace swaps meanwhile.
    private func withPool<T>(_ body: (DatabasePool) throws -> T) throws -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(pool)
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
        lock.withLock { pool.releaseMemory() }
    }

    /// The revision of the last committed sync (0 for a new store).
    public func revision() throws -> Int64 {
        try withPool { pool in try pool.read { db in try Self.revision(db) } }
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

    /// How many rows of each kind the store holds, and their key bytes (to size a directory):
    /// the sizes the store remembers, if they are of its current revision (a replace writes
    /// them, and so does a load, `rememberSizes`), else counted in a scan of every table
    /// (0.2-0.25 s of CPU at 1M memberships).
    public func expectedSizes() throws -> DirectoryBuilder.Expected {
        try withPool { pool in
            try pool.read { db in
                if let remembered = try Self.rememberedSizes(db) { return remembered }
                return try Self.countSizes(db)
            }
        }
    }

    /// Remembers `sizes` (counted while loading the store at `revision`) for the next
    /// `expectedSizes`, unless the store has moved on. Any batch applied after makes them stale
    /// (the next start counts again): a directory sized too small grows by steps, and one sized
    /// far too large holds the memory until it is fitted.
    public func rememberSizes(_ sizes: DirectoryBuilder.Expected, revision: Int64) throws {
        try withPool { pool in
            if try pool.read({ db in try Self.rememberedSizes(db) }) != nil { return }
            try pool.write { db in
                guard try Self.revision(db) == revision else { return }
                try Self.writeSizes(sizes, revision: revision, db)
            }
        }
    }

    /// The sizes, as `meta` rows named `size.<field>`.
    private static func sizeFields() -> [(String, WritableKeyPath<DirectoryBuilder.Expected, Int>)] {
        [("orgs", \.orgs), ("users", \.users), ("members", \.members), ("roles", \.roles), ("api_keys", \.apiKeys),
         ("invitations", \.invitations), ("org_key_bytes", \.orgKeyBytes), ("user_key_bytes", \.userKeyBytes),
         ("member_key_bytes", \.memberKeyBytes), ("role_key_bytes", \.roleKeyBytes), ("api_key_key_bytes", \.apiKeyKeyBytes),
         ("invitation_key_bytes", \.invitationKeyBytes), ("user_payload_bytes", \.userPayloadBytes),
         ("api_key_payload_bytes", \.apiKeyPayloadBytes), ("invitation_payload_bytes", \.invitationPayloadBytes),
         ("indexed_members", \.indexedMembers)]
    }

    private static func writeSizes(_ sizes: DirectoryBuilder.Expected, revision: Int64, _ db: Database) throws {
        try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('size.revision', ?)", arguments: [revision])
        for (name, field) in sizeFields() {
            try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", arguments: ["size.\(name)", sizes[keyPath: field]])
        }
    }

    private static func rememberedSizes(_ db: Database) throws -> DirectoryBuilder.Expected? {
        var e = DirectoryBuilder.Expected()
        let rows = try Row.fetchAll(db, sql: "SELECT key, value FROM meta WHERE key LIKE 'size.%'")
        var values: [String: Int] = [:]
        for row in rows { values[row[0]] = row[1] }
        guard values["size.revision"].map(Int64.init) == (try revision(db)) else { return nil }
        for (name, field) in sizeFields() {
            guard let v = values["size.\(name)"] else { return nil }
            e[keyPath: field] = v
        }
        return e
    }

    private static func countSizes(_ db: Database) throws -> DirectoryBuilder.Expected {
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
        // Members whose org and user ids are both canonical lowercase UUIDs (`MemberIndex`):
        // GLOB is case-sensitive and matches exactly 36 characters here.
        let uuid = [8, 4, 4, 4, 12].map { String(repeating: "[0-9a-f]", count: $0) }.joined(separator: "-")
        (e.indexedMembers, _) = try count("SELECT COUNT(*), 0 FROM members WHERE org GLOB '\(uuid)' AND user GLOB '\(uuid)'")
        (e.apiKeys, e.apiKeyKeyBytes, e.apiKeyPayloadBytes) = try count(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(id AS BLOB))), 0), COALESCE(SUM(LENGTH(CAST(org AS BLOB)) + LENGTH(CAST(user AS BLOB))), 0) FROM api_keys")
        (e.invitations, e.invitationKeyBytes, e.invitationPayloadBytes) = try count(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(id AS BLOB))), 0), COALESCE(SUM(LENGTH(CAST(org AS BLOB)) + LENGTH(CAST(email AS BLOB))), 0) FROM invitations")
        return e
    }

    /// Streams every record, in an order that rebuilds the directory, to `body`, in one read
    /// transaction; returns the revision they are at. A second thread reads the rows out of
    /// SQLite (as bytes, see `RowChunks`) while this one makes them records and calls `body`.
    public func load(_ body: (AuthzCore.Record) -> Void) throws -> Int64 {
        try stream(body) { db, chunks in
            try Self.copyTables(db, Self.loadTables.indices, to: chunks)
            return try Self.revision(db)
        }
    }

    /// `load`, with the users built apart (`UsersBuilder`, sized for `expected`'s users) on
    /// the reading thread, in the time it would wait for this one (while the chunks it has
    /// read are not taken yet), and after the other tables: `body` receives every other
    /// record, in order (the orgs, where the users would stand, then the rest). Returns the
    /// revision, the users, and their sizes (`Expected`'s user fields).
    public func load(buildingUsers expected: DirectoryBuilder.Expected, _ body: (AuthzCore.Record) -> Void) throws
        -> (revision: Int64, users: UsersBuilder, userSizes: DirectoryBuilder.Expected) {
        try stream(body) { db, chunks in
            var users = UsersBuilder(expected: expected)
            var sizes = DirectoryBuilder.Expected()
            let sql = Self.loadTables[Self.usersTable].sql
            let statement = try db.makeStatement(sql: sql)
            var usersLeft = true
            // Up to `n` more users; false once none are left.
            func buildUsers(_ n: Int) throws -> Bool {
                guard usersLeft else { return false }
                usersLeft = try RowReader.step(db, statement, sql: sql, rows: n) { r in
                    let user = try Self.user(r)
                    sizes.count(.user(user))
                    users.add(user)
                }
                return true
            }
            try Self.copyTables(db, Self.loadTables.indices.filter { $0 != Self.usersTable }, to: chunks) { try buildUsers(256) }
            chunks.finish()
            while try buildUsers(4096) {}
            return (try Self.revision(db), users, sizes)
        }
    }

    /// What both loads share: `read` runs on a second thread in one read transaction, handing
    /// rows over through `chunks` (and ending them when it returns or throws), while this
    /// thread makes them records and calls `body`. Returns what `read` returns.
    private func stream<R: Sendable>(_ body: (AuthzCore.Record) -> Void,
                                     read: @escaping @Sendable (Database, RowChunks) throws -> R) throws -> R {
        try withPool { pool in
            let chunks = RowChunks()
            let reading = Concurrently { () throws -> R in
                defer { chunks.finish() }
                return try pool.read { db in try read(db, chunks) }
            }
            var state = LoadState()
            do throws(UnreadableRow) {
                while let chunk = chunks.next() {
                    try RowChunks.rows(of: chunk) { (table, row) throws(UnreadableRow) in body(try Self.record(table, row, &state)) }
                }
            } catch {
                // The reading thread stops at its next chunk rather than wait for this one.
                chunks.abandon()
                _ = reading.result
                throw error
            }
            return try reading.result.get()
        }
    }

    /// Copies the rows of `tables` (positions in `loadTables`) into chunks for `chunks`;
    /// `meanwhile` as in `RowChunks.send`.
    private static func copyTables(_ db: Database, _ tables: some Sequence<Int>, to chunks: RowChunks,
                                   meanwhile: () throws -> Bool = { false }) throws {
        var chunk: [UInt8] = []
        chunk.reserveCapacity(RowChunks.chunkBytes + 4096)
        for table in tables {
            try RowChunks.copy(db, loadTables[table].sql, table: UInt8(table), into: &chunk, sending: chunks, meanwhile: meanwhile)
        }
        if !chunk.isEmpty { try chunks.send(chunk, meanwhile: meanwhile) }
    }

    /// A table `load` reads: its name, the columns read (the first `keyColumns` name a row),
    /// and so its query.
    private struct LoadTable {
        let name: String
        let columns: [String]
        let keyColumns: Int
        var sql: String { "SELECT \(columns.joined(separator: ", ")) FROM \(name)" }
    }

    /// What `load` reads, table by table (the order rebuilds the directory: orgs before what
    /// belongs to them, roles before the members that hold them).
    private static let loadTables = [
        LoadTable(name: "orgs", columns: ["id", "personal", "suspended", "suspended_until"], keyColumns: 1),
        LoadTable(name: "users", columns: ["id", "email", "email_verified"], keyColumns: 1),
        LoadTable(name: "roles", columns: ["org", "id", "permissions"], keyColumns: 2),
        LoadTable(name: "members", columns: ["org", "user", "role", "assignments"], keyColumns: 2),
        LoadTable(name: "api_keys", columns: ["id", "org", "user", "permissions", "expires_at"], keyColumns: 1),
        LoadTable(name: "invitations", columns: ["id", "org", "email", "role", "assignments", "status", "expires_at"], keyColumns: 1),
    ]
    /// How many columns a row of `loadTables[table]` has: read for every row of a load, so a
    /// plain array of counts (reading them through `loadTables` retained each table's strings).
    private static let columnCounts = loadTables.map(\.columns.count)
    static func columns(of table: UInt8) -> Int { columnCounts[Int(table)] }
    private static let usersTable = 1

    /// The user a row of `loadTables[usersTable]` stores.
    private static func user(_ r: some RowColumns) throws(UnreadableRow) -> AuthzCore.Record.User {
        try reading(usersTable, r) { () throws(StoredValueError) in try storedUser(r) }
    }

    private static func storedUser(_ r: some RowColumns) throws(StoredValueError) -> AuthzCore.Record.User {
        .init(id: r.text(0), email: r.optionalText(1), emailVerified: try r.flag(2))
    }

    /// Strings and lists shared from row to row while loading.
    private struct LoadState {
        var org = "", role = ""
        var lists = ListCache()
    }

    /// A row of the store that does not read back as a record (a store edited by hand, or
    /// damaged): its table, its key, and the stored value that is not what its column holds.
    public struct UnreadableRow: Error, CustomStringConvertible {
        public let table: String
        public let key: [String]
        public let column: String
        public let value: String
        public let expected: String
        public var description: String {
            // A damaged value can be anything: at most 100 characters of it.
            let shown = value.count > 100 ? value.prefix(100) + "..." : value
            return "table \(table), row \(key.map { "'\($0)'" }.joined(separator: " ")): \(column) is '\(shown)', not \(expected)"
        }
    }

    /// The record a row of `loadTables[table]` stores.
    private static func record(_ table: UInt8, _ r: some RowColumns, _ state: inout LoadState) throws(UnreadableRow) -> AuthzCore.Record {
        try reading(Int(table), r) { () throws(StoredValueError) in try storedRecord(table, r, &state) }
    }

    /// `body`'s value, or the row of `loadTables[table]` it could not read, named.
    private static func reading<T>(_ table: Int, _ r: some RowColumns, _ body: () throws(StoredValueError) -> T) throws(UnreadableRow) -> T {
        do {
            return try body()
        } catch {
            let t = loadTables[table]
            throw UnreadableRow(table: t.name, key: (0..<t.keyColumns).map { r.text(Int32($0)) }, column: t.columns[Int(error.column)],
                                value: error.value, expected: error.expected)
        }
    }

    private static func storedRecord(_ table: UInt8, _ r: some RowColumns, _ state: inout LoadState) throws(StoredValueError) -> AuthzCore.Record {
        switch table {
        case 0:
            .org(.init(id: r.text(0), personal: try r.flag(1), suspended: try r.flag(2), suspendedUntil: try r.timestamp(3)))
        case 1:
            .user(try storedUser(r))
        case 2:
            .role(.init(org: r.text(0), id: r.text(1), permissions: r.list(2)))
        case 3:
            .member(.init(org: r.text(0, repeating: &state.org), user: r.text(1), role: r.text(2, repeating: &state.role),
                          assignments: r.list(3, cache: &state.lists)))
        case 4:
            .apiKey(.init(id: r.text(0), org: r.text(1), user: r.text(2), permissions: r.list(3), expiresAt: try r.timestamp(4)))
        default:
            .invitation(.init(id: r.text(0), org: r.text(1), email: r.text(2), role: r.text(3), assignments: r.list(4),
                              status: r.text(5), expiresAt: try r.timestamp(6)))
        }
    }

    /// What went wrong committing: the store refused or the revision moved under us.
    public enum StoreError: Error, CustomStringConvertible {
        case revisionMoved(expected: Int64, found: Int64)
        /// A write failed past the point where it may already be on disk (a replace's rename
        /// done but its directory not synced; a commit whose sync failed), or the store could
        /// not be opened again: it may hold the batch or not, and this process can no longer
        /// tell. Only a restart, which loads the store as it is, knows.
        case stateUnknown(String)
        public var description: String {
            switch self {
            case .revisionMoved(let e, let f): "the store is at revision \(f), not \(e)"
            case .stateUnknown(let m): m
            }
        }
    }

    /// `body` (a write transaction), with a failed sync reported as `stateUnknown`: the commit's
    /// frames were written, so whether they reach the disk is unknown. A failed write (a full
    /// disk or quota: `SQLITE_FULL`, `SQLITE_IOERR_WRITE`) means no complete commit was
    /// written: SQLite rolls back, nothing changed, and the next sync may succeed.
    private static func committing<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as DatabaseError
            where error.extendedResultCode == .SQLITE_IOERR_FSYNC || error.extendedResultCode == .SQLITE_IOERR_DIR_FSYNC {
            throw StoreError.stateUnknown("syncing the commit failed: \(error)")
        }
    }

    /// Applies a validated batch in one transaction and stamps it `revision`; returns only
    /// once the commit is durable. `previous` guards against a second writer.
    public func apply(_ records: [LocatedRecord], revision: Int64, previous: Int64) throws {
        try withPool { pool in
            try Self.committing { try pool.write { db in
                let found = try Self.revision(db)
                guard found == previous else { throw StoreError.revisionMoved(expected: previous, found: found) }
                var writer = RowWriter(db)
                for r in records { try writer.write(r.record) }
                try db.execute(sql: "UPDATE meta SET value = ? WHERE key = 'revision'", arguments: [revision])
            } }
            if records.count > 10_000 { truncateWAL(pool) }
        }
    }

    /// Replaces the whole state with `batch` (a replace's records, in order) and stamps it
    /// `revision`, while `validate` runs on a second thread: the rows are written as the batch
    /// is validated, and the replace commits only if `validate` returns. If it throws,
    /// nothing changes and its error is rethrown (a failed store write throws the store's).
    /// Returns `validate`'s result once the commit is durable.
    ///
    /// The rows go into a new file, renamed over the store once validated (`replaceByRename`):
    /// in place, every row is deleted and written again, each page goes through the WAL and
    /// then into the store, and a WAL the size of the store is left for the next start to
    /// read. In place only when the swap cannot be made safely: another `MembershipStore` of
    /// the same path open in this process, or another program's connection to the file.
    public func replace<T: Sendable>(with batch: [LocatedRecord], revision: Int64, previous: Int64,
                                     validatingMeanwhile validate: @escaping @Sendable () throws -> T) throws -> T {
        let validation = Concurrently(validate)
        lock.lock()
        defer { lock.unlock() }
        do {
            let found = try pool.read { db in try Self.revision(db) }
            guard found == previous else { throw StoreError.revisionMoved(expected: previous, found: found) }
            var renamed = false
            if ownership.alone({ true }) != nil {
                renamed = try replaceByRename(batch, revision: revision, previous: previous, validation: validation)
            }
            if !renamed {
                try replaceInPlace(batch, revision: revision, previous: previous, validation: validation)
            }
        } catch {
            if case .failure(let invalid) = validation.result { throw invalid }
            throw error
        }
        return try validation.result.get()
    }

    /// Opens the store again after its connections were closed for a swap. Should that fail,
    /// this process has no store left to write to: `stateUnknown`, so that the writer refuses
    /// syncs and asks for a restart instead of failing each one as if it could be retried.
    private func reopen(after what: String) throws -> DatabasePool {
        do {
            if failing.withLock({ $0 }) == .reopen { throw POSIXError(.EIO) }
            return try Self.open(file)
        } catch {
            throw StoreError.stateUnknown("the store could not be opened again after \(what): \(error)")
        }
    }

    /// The path a replace writes its new file to, next to the store (a rename stays in one
    /// file system).
    static func newFilePath(_ path: String) -> String { path + ".new" }

    /// A file and what SQLite may have left beside it.
    private static func removeFiles(of path: String) {
        for suffix in ["", "-journal", "-wal", "-shm"] { unlink(path + suffix) }
    }

    /// Writes the replace into a new file, without a journal (a crash leaves only a file that
    /// nothing reads), syncs it, waits for the validation, and swaps it in with one rename.
    /// The rename is the commit: before it a crash leaves the old store; after it, the new.
    /// Returns false, changing nothing, if the swap cannot be done safely (the caller then
    /// replaces in place). Under `lock`.
    private func replaceByRename(_ batch: [LocatedRecord], revision: Int64, previous: Int64,
                                 validation: Concurrently<some Sendable>) throws -> Bool {
        let path = file
        let newPath = Self.newFilePath(path)
        Self.removeFiles(of: newPath)
        var removeNew = true
        defer { if removeNew { Self.removeFiles(of: newPath) } }

        var config = Configuration()
        config.label = "authz-store-new"
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA journal_mode = OFF")
            try db.execute(sql: "PRAGMA synchronous = OFF")
            // 16 MB, not the writer's 256: the rows go in key order into empty tables, so a
            // page is full when it is evicted and never read again, and with no journal an
            // eviction is one write. The larger cache only held up to 256 MB more of the
            // process's memory during a replace (80-90k more page faults at 1M memberships,
            // 310 MB more peak), for no faster commit (benchmarks/FINDINGS.md).
            try db.execute(sql: "PRAGMA cache_size = -16384")
        }
        let queue = try DatabaseQueue(path: newPath, configuration: config)
        try Self.migrator.migrate(queue)
        let complete = try queue.writeWithoutTransaction { db in
            // One transaction for speed. With no journal a rollback cannot restore the file,
            // and need not (an incomplete file is removed), but a failed write (a full disk)
            // must not leave the transaction open: GRDB traps on a connection left in one.
            try db.execute(sql: "BEGIN")
            let complete: Bool
            do {
                complete = try Self.writeRows(batch, revision: revision, into: db, validation: validation)
                try db.execute(sql: "COMMIT")
            } catch {
                try? db.execute(sql: "ROLLBACK")
                throw error
            }
            // The store is a WAL database: say so in the new file's header now, not at the
            // first open after the swap.
            try db.execute(sql: "PRAGMA journal_mode = WAL")
            return complete
        }
        try queue.close()
        _ = try validation.result.get()
        guard complete else { return false }
        try Self.sync(newPath)
        CrashPoint.reached(.newFileWritten)

        return try ownership.alone { () throws -> Bool in
            // The old WAL must be empty before the rename: its frames are pages of the old
            // file, and SQLite would read them into the new one. A TRUNCATE checkpoint copies
            // them into the old file and empties the WAL; nothing writes after it (`lock`,
            // `alone`, and `StoreLock` keeps other processes out).
            // A reader in another process (a `sqlite3` shell) can keep it from completing:
            // then the swap is given up for a replace in place.
            let (walFrames, found) = try pool.writeWithoutTransaction { db in
                ((try? db.checkpoint(.truncate))?.walFrameCount ?? -1, try Self.revision(db))
            }
            guard found == previous else { throw StoreError.revisionMoved(expected: previous, found: found) }
            guard walFrames == 0 else { return false }
            // Readers first (`releaseMemory` closes them), so that the writer closes last: the
            // last connection to close deletes the -wal and -shm files, unless a connection of
            // another process (a `sqlite3` shell) still has the store open. Then they stay,
            // and the swap is given up: that connection would go on with the old file and
            // share its -wal with the new one.
            do {
                pool.releaseMemory()
                try pool.close()
            } catch {
                pool = try reopen(after: "a replace's swap was given up")
                return false
            }
            CrashPoint.reached(.oldWALEmptied)
            var renamed = false
            let swapped = Result { () throws -> Bool in
                guard !Self.exists(path + "-wal") && !Self.exists(path + "-shm") else { return false }
                // The -wal's removal is on disk before the rename can be.
                try Self.sync(Self.directory(of: path))
                guard rename(newPath, path) == 0 else { throw Self.posixError(path) }
                renamed = true
                removeNew = false
                CrashPoint.reached(.renamed)
                // Durable: the rename is on disk before the replace is acknowledged.
                if failing.withLock({ $0 }) == .afterRename { throw POSIXError(.EIO) }
                try Self.sync(Self.directory(of: path))
                return true
            }
            // Open again on whichever file is at `path` now. A failure after the rename (this
            // open, or the directory's sync) leaves the replace in place but maybe not durable:
            // neither "done" nor "nothing changed" is true, so it is `stateUnknown`.
            pool = try reopen(after: renamed ? "a replace renamed over it" : "a replace's swap was given up")
            do {
                return try swapped.get()
            } catch where renamed {
                throw StoreError.stateUnknown("the replace was renamed over the store, then failed: \(error)")
            }
        } ?? false
    }

    /// The whole state in place, in one transaction of the store: every row deleted, the
    /// batch written. Under `lock`.
    private func replaceInPlace(_ batch: [LocatedRecord], revision: Int64, previous: Int64,
                                validation: Concurrently<some Sendable>) throws {
        try Self.committing { try pool.write { db in
            let found = try Self.revision(db)
            guard found == previous else { throw StoreError.revisionMoved(expected: previous, found: found) }
            for table in ["orgs", "users", "roles", "members", "api_keys", "invitations"] {
                try db.execute(sql: "DELETE FROM \(table)")
            }
            _ = try Self.writeRows(batch, revision: revision, into: db, validation: validation)
            // Throwing here rolls the transaction back.
            _ = try validation.result.get()
        } }
        truncateWAL(pool)
    }

    /// Empties the WAL after a large write. SQLite checkpoints it as it grows, but the file
    /// keeps the size of the largest transaction, and a server that stops without closing the
    /// store (SIGKILL) leaves all of it to be read back and indexed at the next start. Best
    /// effort: a reader in the middle of a transaction makes it fail, and nothing depends on it.
    private func truncateWAL(_ pool: DatabasePool) {
        _ = try? pool.writeWithoutTransaction { db in try db.checkpoint(.truncate) }
    }

    /// Writes a replace's rows into empty tables and stamps them `revision`; returns false if
    /// it stopped early because the validation failed.
    private static func writeRows(_ batch: [LocatedRecord], revision: Int64, into db: Database,
                                  validation: Concurrently<some Sendable>) throws -> Bool {
        // Bulk load: secondary indexes are dropped and built again after the inserts
        // (a sort), instead of taking a million random inserts each. Same transaction.
        // Not when the batch deletes: each cascade would scan whole tables.
        let (order, sorted) = Self.writeOrder(batch)
        if sorted { try db.execute(sql: Self.dropIndexes) }
        var writer = RowWriter(db)
        var sizes = DirectoryBuilder.Expected()
        for (n, i) in order.enumerated() {
            try writer.write(batch[Int(i)].record)
            sizes.count(batch[Int(i)].record)
            // An invalid batch is usually found early: stop writing for nothing.
            if n & 0x3FFF == 0, validation.failed { return false }
        }
        if sorted { try db.execute(sql: Self.createIndexes) }
        // For the next start-up (a key written twice in the batch is counted twice: the
        // sizes are a hint).
        try writeSizes(sizes, revision: revision, db)
        try db.execute(sql: "UPDATE meta SET value = ? WHERE key = 'revision'", arguments: [revision])
        return true
    }

    /// `fsync` of a file or directory.
    private static func sync(_ path: String) throws {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw posixError(path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw posixError(path) }
    }

    private static func posixError(_ path: String) -> any Error {
        CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path,
                                                 NSUnderlyingErrorKey: POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)])
    }

    private static func directory(of path: String) -> String {
        let dir = (path as NSString).deletingLastPathComponent
        return dir.isEmpty ? "." : dir
    }

    private static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
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
final class Concurrently<T: Sendable>: @unchecked Sendable {
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

/// Where a test may have a store's write fail (an I/O error it cannot cause otherwise):
/// `MembershipStore.failing`.
enum FailurePoint: Sendable {
    /// After a replace's rename, before the directory is synced.
    case afterRename
    /// Opening the store again after a replace closed it for the swap.
    case reopen
}

/// Where a test may have the process killed in the middle of a replace by rename
/// (`AUTHZ_STORE_CRASH_AT=<point>`, read once): SIGKILL, as a crash would, to show that the
/// store then opens to exactly the old or the new state.
enum CrashPoint: String {
    /// The new file is complete and synced; the old store is untouched.
    case newFileWritten = "new-file-written"
    /// The old store's WAL is checkpointed and empty, its connections closed.
    case oldWALEmptied = "old-wal-emptied"
    /// The new file is in place; the directory is not synced yet, nothing acknowledged.
    case renamed

    private static let armed = ProcessInfo.processInfo.environment["AUTHZ_STORE_CRASH_AT"].flatMap(CrashPoint.init(rawValue:))

    static func reached(_ point: CrashPoint) {
        if armed == point { kill(getpid(), SIGKILL) }
    }
}
