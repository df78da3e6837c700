import AuthzCore
import GRDB
internal import GRDBSQLite

/// Writes records as rows through SQLite's C API, one prepared statement per kind of write.
///
/// A full replace writes two million rows in one transaction. Through GRDB's
/// `StatementArguments` each row cost an array of boxed `DatabaseValue`s, a joined String per
/// list and a statement-cache lookup by SQL text: profiled, that Swift work (reference
/// counting, allocation) took more time than SQLite's own B-tree work. Here values are bound
/// straight from the record's Strings, and lists are joined into one reused byte buffer.
struct RowWriter: ~Copyable {
    private let db: Database
    private var statements: [Statement?] = Array(repeating: nil, count: SQL.allCases.count)
    /// The bytes of a space-joined list, reused from row to row.
    private var buffer: [UInt8] = []

    init(_ db: Database) {
        self.db = db
        buffer.reserveCapacity(256)
    }

    /// The statements, in one place so their placeholders and the binds below can be read side by side.
    private enum SQL: Int, CaseIterable {
        case org, user, role, member, apiKey, invitation
        case deleteOrg, deleteOrgMembers, deleteOrgRoles, deleteOrgKeys, deleteOrgInvitations
        case deleteUser, deleteUserMembers, deleteUserKeys
        case deleteMember, deleteRole, deleteKey, deleteInvitation

        var text: String {
            switch self {
            case .org: "INSERT OR REPLACE INTO orgs VALUES (?, ?, ?, ?)"
            case .user: "INSERT OR REPLACE INTO users VALUES (?, ?, ?)"
            case .role: "INSERT OR REPLACE INTO roles VALUES (?, ?, ?)"
            case .member: "INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?)"
            case .apiKey: "INSERT OR REPLACE INTO api_keys VALUES (?, ?, ?, ?, ?)"
            case .invitation: "INSERT OR REPLACE INTO invitations VALUES (?, ?, ?, ?, ?, ?, ?)"
            case .deleteOrg: "DELETE FROM orgs WHERE id = ?"
            case .deleteOrgMembers: "DELETE FROM members WHERE org = ?"
            case .deleteOrgRoles: "DELETE FROM roles WHERE org = ?"
            case .deleteOrgKeys: "DELETE FROM api_keys WHERE org = ?"
            case .deleteOrgInvitations: "DELETE FROM invitations WHERE org = ?"
            case .deleteUser: "DELETE FROM users WHERE id = ?"
            case .deleteUserMembers: "DELETE FROM members WHERE user = ?"
            case .deleteUserKeys: "DELETE FROM api_keys WHERE user = ?"
            case .deleteMember: "DELETE FROM members WHERE org = ? AND user = ?"
            case .deleteRole: "DELETE FROM roles WHERE org = ? AND id = ?"
            case .deleteKey: "DELETE FROM api_keys WHERE id = ?"
            case .deleteInvitation: "DELETE FROM invitations WHERE id = ?"
            }
        }
    }

    /// One record, with the same semantics as `Directory.applying`: upsert replaces, delete
    /// cascades (org: its members, roles, keys, invitations; user: its memberships and keys).
    mutating func write(_ record: borrowing AuthzCore.Record) throws {
        switch record {
        case .org(let r):
            let s = try statement(.org)
            text(s, 1, r.id); int(s, 2, r.personal); int(s, 3, r.suspended); text(s, 4, r.suspendedUntil?.description)
            try step(s, .org)
        case .user(let r):
            let s = try statement(.user)
            text(s, 1, r.id); text(s, 2, r.email); int(s, 3, r.emailVerified)
            try step(s, .user)
        case .role(let r):
            let s = try statement(.role)
            text(s, 1, r.org); text(s, 2, r.id); list(s, 3, r.permissions)
            try step(s, .role)
        case .member(let r):
            let s = try statement(.member)
            text(s, 1, r.org); text(s, 2, r.user); text(s, 3, r.role); list(s, 4, r.assignments)
            try step(s, .member)
        case .apiKey(let r):
            let s = try statement(.apiKey)
            text(s, 1, r.id); text(s, 2, r.org); text(s, 3, r.user); list(s, 4, r.permissions)
            text(s, 5, r.expiresAt?.description)
            try step(s, .apiKey)
        case .invitation(let r):
            let s = try statement(.invitation)
            text(s, 1, r.id); text(s, 2, r.org); text(s, 3, r.email); text(s, 4, r.role); list(s, 5, r.assignments)
            text(s, 6, r.status); text(s, 7, r.expiresAt?.description)
            try step(s, .invitation)
        case .delete(.org(let id)):
            for sql in [SQL.deleteOrg, .deleteOrgMembers, .deleteOrgRoles, .deleteOrgKeys, .deleteOrgInvitations] {
                try run(sql, id)
            }
        case .delete(.user(let id)):
            for sql in [SQL.deleteUser, .deleteUserMembers, .deleteUserKeys] { try run(sql, id) }
        case .delete(.member(let org, let user)):
            try run(.deleteMember, org, user)
        case .delete(.role(let org, let id)):
            try run(.deleteRole, org, id)
        case .delete(.apiKey(let id)):
            try run(.deleteKey, id)
        case .delete(.invitation(let id)):
            try run(.deleteInvitation, id)
        }
    }

    private mutating func statement(_ sql: SQL) throws -> OpaquePointer {
        if let s = statements[sql.rawValue] { return s.sqliteStatement }
        let s = try db.makeStatement(sql: sql.text)
        statements[sql.rawValue] = s
        return s.sqliteStatement
    }

    private mutating func run(_ sql: SQL, _ values: String...) throws {
        let s = try statement(sql)
        for (i, v) in values.enumerated() { text(s, Int32(i + 1), v) }
        try step(s, sql)
    }

    /// Runs a bound statement to completion and clears it for the next row.
    private func step(_ s: OpaquePointer, _ sql: SQL) throws {
        let code = sqlite3_step(s)
        sqlite3_reset(s)
        guard code == SQLITE_DONE else { throw sqliteError(db, code, sql: sql.text) }
    }

    /// SQLite copies the bytes (`SQLITE_TRANSIENT`): a small String's bytes live only inside
    /// `withUTF8`.
    private func text(_ s: OpaquePointer, _ index: Int32, _ value: String?) {
        guard var value else {
            sqlite3_bind_null(s, index)
            return
        }
        value.withUTF8 { bind(s, index, UnsafeRawBufferPointer($0)) }
    }

    private func int(_ s: OpaquePointer, _ index: Int32, _ value: Bool) {
        sqlite3_bind_int(s, index, value ? 1 : 0)
    }

    /// A list as its names joined by single spaces (names never contain spaces: they are
    /// validated ids and policy names).
    private mutating func list(_ s: OpaquePointer, _ index: Int32, _ names: [String]) {
        buffer.removeAll(keepingCapacity: true)
        for (i, name) in names.enumerated() {
            if i > 0 { buffer.append(0x20) }
            buffer.append(contentsOf: name.utf8)
        }
        buffer.withUnsafeBytes { bind(s, index, $0) }
    }

    private func bind(_ s: OpaquePointer, _ index: Int32, _ bytes: UnsafeRawBufferPointer) {
        if let base = bytes.baseAddress {
            sqlite3_bind_text(s, index, base.assumingMemoryBound(to: CChar.self), Int32(bytes.count), transient)
        } else {
            sqlite3_bind_text(s, index, "", 0, transient)
        }
    }
}

/// The error of a failed step, with SQLite's message, as GRDB reports its own.
func sqliteError(_ db: Database, _ code: Int32, sql: String) -> DatabaseError {
    DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)), sql: sql)
}

/// `SQLITE_TRANSIENT`, a C macro Swift does not import: SQLite copies the value before the
/// bind returns.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
