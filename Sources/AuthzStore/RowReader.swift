import AuthzCore
import Foundation
import GRDB
internal import GRDBSQLite

/// The columns of one row, as `MembershipStore.load` turns them into a record: straight from
/// a stepped SQLite statement (`RowReader`) or from a chunk of rows a reading thread copied
/// out (`ChunkRow`).
protocol RowColumns {
    /// The column's bytes (text), valid while the row is; empty for NULL or an integer.
    func bytes(_ column: Int32) -> UnsafeBufferPointer<UInt8>
    func isNull(_ column: Int32) -> Bool
    /// The column's integer; nil unless SQLite holds an integer there (NULL, text).
    func integer(_ column: Int32) -> Int64?
}

extension RowColumns {
    func text(_ column: Int32) -> String {
        String(decoding: bytes(column), as: UTF8.self)
    }

    func optionalText(_ column: Int32) -> String? {
        isNull(column) ? nil : text(column)
    }

    /// The column's flag: the integer 0 or 1 the store writes. Anything else (text, NULL, 2)
    /// is an error, not false: a damaged `orgs.suspended` read as false would lift a
    /// suspension.
    func flag(_ column: Int32) throws(StoredValueError) -> Bool {
        if let v = integer(column), v == 0 || v == 1 { return v == 1 }
        let shown = isNull(column) ? "NULL" : integer(column).map { String($0) } ?? text(column)
        throw StoredValueError(column: column, value: shown, expected: "0 or 1")
    }

    /// The column's timestamp, nil for NULL. Text that does not parse is an error, not nil:
    /// nil is "never" (an api key that does not expire), so reading a damaged value as nil
    /// would grant what the stored data limits.
    func timestamp(_ column: Int32) throws(StoredValueError) -> Timestamp? {
        guard let text = optionalText(column) else { return nil }
        guard let t = Timestamp(rfc3339: text) else {
            throw StoredValueError(column: column, value: text, expected: "an RFC 3339 timestamp")
        }
        return t
    }

    /// The column's text, or `last` when it holds the same bytes (then `last` is shared, not
    /// allocated again). Rows come in key order, so a member's org repeats for all of the
    /// org's members: one String for them all instead of one allocation a row.
    func text(_ column: Int32, repeating last: inout String) -> String {
        let new = bytes(column)
        let same = last.withUTF8 { old in
            old.count == new.count && (old.count == 0 || memcmp(old.baseAddress!, new.baseAddress!, old.count) == 0)
        }
        if !same { last = String(decoding: new, as: UTF8.self) }
        return last
    }

    /// A list, shared with an earlier row that stored the same bytes if `cache` still holds
    /// it. Most members hold one of a few hundred lists of global assignments.
    func list(_ column: Int32, cache: inout ListCache) -> [String] {
        let all = bytes(column)
        if all.isEmpty { return [] }
        return cache.list(for: all) { list(column) }
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

/// A stored value that does not read back as the type its column holds (a store edited by
/// hand, or damaged): the load stops with it rather than guess.
struct StoredValueError: Error {
    let column: Int32
    let value: String
    let expected: String
}

/// The columns of the current row of a stepped statement, read through SQLite's C API: a
/// start-up reads two million rows, and GRDB's `Row` (a generic decode per column) cost more
/// than SQLite's own work.
struct RowReader: RowColumns {
    let statement: OpaquePointer

    /// Steps `sql` to the end, calling `body` for each row.
    static func each(_ db: Database, _ sql: String, _ body: (RowReader) throws -> Void) throws {
        let statement = try db.makeStatement(sql: sql)
        try withExtendedLifetime(statement) {
            let s = statement.sqliteStatement
            while true {
                let code = sqlite3_step(s)
                if code == SQLITE_DONE { return }
                guard code == SQLITE_ROW else { throw sqliteError(db, code, sql: sql) }
                try body(RowReader(statement: s))
            }
        }
    }

    /// Steps `statement` (of `sql`) by up to `rows` rows, calling `body` for each; returns
    /// whether rows may be left (false once it reached the end).
    static func step(_ db: Database, _ statement: Statement, sql: String, rows: Int, _ body: (RowReader) throws -> Void) throws -> Bool {
        try withExtendedLifetime(statement) {
            let s = statement.sqliteStatement
            for _ in 0..<rows {
                let code = sqlite3_step(s)
                if code == SQLITE_DONE { return false }
                guard code == SQLITE_ROW else { throw sqliteError(db, code, sql: sql) }
                try body(RowReader(statement: s))
            }
            return true
        }
    }

    var columnCount: Int32 { sqlite3_column_count(statement) }

    /// Text first, then its length, the order SQLite documents.
    func bytes(_ column: Int32) -> UnsafeBufferPointer<UInt8> {
        let text = sqlite3_column_text(statement, column)
        return UnsafeBufferPointer(start: text, count: Int(sqlite3_column_bytes(statement, column)))
    }

    func isNull(_ column: Int32) -> Bool {
        sqlite3_column_type(statement, column) == SQLITE_NULL
    }

    func int(_ column: Int32) -> Int64 {
        sqlite3_column_int64(statement, column)
    }

    func integer(_ column: Int32) -> Int64? {
        sqlite3_column_type(statement, column) == SQLITE_INTEGER ? sqlite3_column_int64(statement, column) : nil
    }
}

/// Rows copied out of SQLite as bytes, in chunks, by a reading thread, for another thread to
/// turn into records: at start-up the reading (SQLite's B-tree and record decoding) then
/// overlaps the directory build. Bytes rather than records: strings allocated on one thread
/// and freed on the other contended in malloc, and measured slower than one thread.
///
/// A row is its table's number (a byte), then each column: 0 (NULL), 1 and an Int64, or 2, a
/// UInt32 length and the text's bytes.
final class RowChunks: @unchecked Sendable {
    static let chunkBytes = 1 << 20
    private static let depth = 4
    private let condition = NSCondition()
    private var ready: [[UInt8]] = []
    private var done = false
    /// The consumer stopped (it failed): chunks sent after are dropped, and `send` throws.
    private var abandoned = false

    /// Thrown by `send` once the consumer has `abandon`ed the chunks.
    struct Abandoned: Error {}

    /// Copies every row of `sql` into chunks, each row tagged `table`; while the consumer is
    /// behind, `meanwhile` runs instead of waiting (see `send`).
    static func copy(_ db: Database, _ sql: String, table: UInt8, into chunk: inout [UInt8], sending chunks: RowChunks,
                     meanwhile: () throws -> Bool = { false }) throws {
        try RowReader.each(db, sql) { r in
            chunk.append(table)
            for c in 0..<r.columnCount {
                switch sqlite3_column_type(r.statement, c) {
                case SQLITE_NULL:
                    chunk.append(0)
                case SQLITE_INTEGER:
                    chunk.append(1)
                    withUnsafeBytes(of: r.int(c).littleEndian) { chunk.append(contentsOf: $0) }
                default:
                    let b = r.bytes(c)
                    chunk.append(2)
                    withUnsafeBytes(of: UInt32(b.count).littleEndian) { chunk.append(contentsOf: $0) }
                    chunk.append(contentsOf: b)
                }
            }
            if chunk.count >= chunkBytes {
                try chunks.send(chunk, meanwhile: meanwhile)
                chunk = []
                chunk.reserveCapacity(chunkBytes + 4096)
            }
        }
    }

    /// Hands a chunk over, waiting while `depth` chunks are waiting already; until then, runs
    /// `meanwhile` again and again instead of waiting, for as long as it returns true (it did
    /// some work, and has more).
    /// Throws `Abandoned` if the consumer has stopped: the sender stops too, instead of
    /// waiting for a reader that will never come.
    func send(_ chunk: [UInt8], meanwhile: () throws -> Bool = { false }) throws {
        while isFull, try meanwhile() {}
        condition.lock()
        defer { condition.unlock() }
        while ready.count >= Self.depth && !abandoned { condition.wait() }
        if abandoned { throw Abandoned() }
        ready.append(chunk)
        condition.broadcast()
    }

    /// The consumer stops taking chunks: those waiting are freed, and the sender's next (or
    /// current) `send` throws `Abandoned`.
    func abandon() {
        condition.lock()
        abandoned = true
        ready = []
        condition.broadcast()
        condition.unlock()
    }

    private var isFull: Bool {
        condition.lock()
        defer { condition.unlock() }
        return ready.count >= Self.depth && !abandoned
    }

    /// No more chunks (the reading ended, or failed).
    func finish() {
        condition.lock()
        done = true
        condition.broadcast()
        condition.unlock()
    }

    /// The next chunk, or nil once `finish`ed and drained.
    func next() -> [UInt8]? {
        condition.lock()
        defer { condition.unlock() }
        while ready.isEmpty && !done { condition.wait() }
        if ready.isEmpty { return nil }
        let chunk = ready.removeFirst()
        condition.broadcast()
        return chunk
    }

    /// Each row of `chunk`: its table and its columns.
    static func rows<E: Error>(of chunk: [UInt8], _ body: (UInt8, ChunkRow) throws(E) -> Void) throws(E) {
        try chunk.withUnsafeBufferPointer { (all) throws(E) in
            var at = 0
            var row = ChunkRow(base: all.baseAddress!)
            while at < all.count {
                let table = all[at]
                at += 1
                row.count = 0
                // At most 7 columns a row (invitations).
                for _ in 0..<MembershipStore.columns(of: table) {
                    row.starts[row.count] = at
                    row.count += 1
                    switch all[at] {
                    case 0: at += 1
                    case 1: at += 9
                    default:
                        var n: UInt32 = 0
                        withUnsafeMutableBytes(of: &n) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(all)[(at + 1)..<(at + 5)])) }
                        at += 5 + Int(UInt32(littleEndian: n))
                    }
                }
                try body(table, row)
            }
        }
    }
}

/// One row of a chunk (see `RowChunks`).
struct ChunkRow: RowColumns {
    let base: UnsafePointer<UInt8>
    /// Where each column's tag is, from `base`.
    var starts = [Int](repeating: 0, count: 8)
    var count = 0

    init(base: UnsafePointer<UInt8>) { self.base = base }

    func bytes(_ column: Int32) -> UnsafeBufferPointer<UInt8> {
        let at = starts[Int(column)]
        guard base[at] == 2 else { return UnsafeBufferPointer(start: base, count: 0) }
        var n: UInt32 = 0
        withUnsafeMutableBytes(of: &n) { $0.copyMemory(from: UnsafeRawBufferPointer(start: base + at + 1, count: 4)) }
        return UnsafeBufferPointer(start: base + at + 5, count: Int(UInt32(littleEndian: n)))
    }

    func isNull(_ column: Int32) -> Bool {
        base[starts[Int(column)]] == 0
    }

    func integer(_ column: Int32) -> Int64? {
        let at = starts[Int(column)]
        guard base[at] == 1 else { return nil }
        var v: Int64 = 0
        withUnsafeMutableBytes(of: &v) { $0.copyMemory(from: UnsafeRawBufferPointer(start: base + at + 1, count: 8)) }
        return Int64(littleEndian: v)
    }
}

/// Lists already read, by their stored bytes: a small direct-mapped table (a slot keeps the
/// last list that hashed to it). Lists longer than `maxBytes` are not kept: those name custom
/// roles (uuids), which repeat only within an org.
struct ListCache {
    private static let slots = 1024
    static let maxBytes = 48
    private var keys = [[UInt8]](repeating: [], count: slots)
    private var lists = [[String]](repeating: [], count: slots)

    mutating func list(for bytes: UnsafeBufferPointer<UInt8>, make: () -> [String]) -> [String] {
        guard bytes.count <= Self.maxBytes else { return make() }
        // FNV-1a: the lists are short, and a slot is checked byte for byte anyway.
        var h: UInt32 = 2_166_136_261
        for b in bytes { h = (h ^ UInt32(b)) &* 16_777_619 }
        let slot = Int(h % UInt32(Self.slots))
        if keys[slot].count == bytes.count && keys[slot].withUnsafeBufferPointer({ memcmp($0.baseAddress!, bytes.baseAddress!, bytes.count) == 0 }) {
            return lists[slot]
        }
        let list = make()
        keys[slot] = Array(bytes)
        lists[slot] = list
        return list
    }
}
