import AuthzCore
import Foundation
import GRDB
internal import GRDBSQLite

/// The columns of the current row of a stepped statement, read through SQLite's C API: a
/// start-up reads two million rows, and GRDB's `Row` (a generic decode per column) cost more
/// than SQLite's own work.
struct RowReader {
    let statement: OpaquePointer

    /// Steps `sql` to the end, calling `body` for each row.
    static func each(_ db: Database, _ sql: String, _ body: (RowReader) -> Void) throws {
        let statement = try db.makeStatement(sql: sql)
        try withExtendedLifetime(statement) {
            let s = statement.sqliteStatement
            while true {
                let code = sqlite3_step(s)
                if code == SQLITE_DONE { return }
                guard code == SQLITE_ROW else { throw sqliteError(db, code, sql: sql) }
                body(RowReader(statement: s))
            }
        }
    }

    /// The column's bytes (valid until the next step). Text first, then its length, the
    /// order SQLite documents.
    private func bytes(_ column: Int32) -> UnsafeBufferPointer<UInt8> {
        let text = sqlite3_column_text(statement, column)
        return UnsafeBufferPointer(start: text, count: Int(sqlite3_column_bytes(statement, column)))
    }

    func text(_ column: Int32) -> String {
        String(decoding: bytes(column), as: UTF8.self)
    }

    func optionalText(_ column: Int32) -> String? {
        sqlite3_column_type(statement, column) == SQLITE_NULL ? nil : text(column)
    }

    func bool(_ column: Int32) -> Bool {
        sqlite3_column_int(statement, column) != 0
    }

    func timestamp(_ column: Int32) -> Timestamp? {
        optionalText(column).flatMap(Timestamp.init(rfc3339:))
    }

    /// A list stored as names joined by single spaces.
    func list(_ column: Int32) -> [String] {
        let all = bytes(column)
        var out: [String] = []
        var start = 0
        for i in 0...all.count where i == all.count || all[i] == 0x20 {
            if i > start { out.append(String(decoding: UnsafeBufferPointer(rebasing: all[start..<i]), as: UTF8.self)) }
            start = i + 1
        }
        return out
    }
}
