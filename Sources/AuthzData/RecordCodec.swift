import AuthzCore
import Dispatch
import Foundation

/// Membership records as JSON Lines: one JSON object per line, `kind` naming the record and
/// `op` (`upsert`, the default, or `delete`) what to do with it.
///
///     {"kind":"member","org":"acme","user":"u1","role":"member","assignments":["developer"]}
///     {"kind":"member","op":"delete","org":"acme","user":"u1"}
///
/// Decoding checks the shape of each line (JSON, kind, op, known fields, field types,
/// timestamps) and reports what is wrong with the line and field at fault. Whether the names
/// mean anything (an org that exists, an assignment the policy declares, a valid id) is for
/// `Directory.applying`, which reports with the same line numbers.
public enum RecordCodec {
    /// `decodeLines` stops collecting errors after this many.
    public static let maxErrors = 100

    /// Decodes one line (without its line break); `number` is its 1-based line number, used in errors.
    public static func decode(line: String, number: Int) throws(DataError) -> Record {
        try decode(line: Data(line.utf8), number: number)
    }

    /// Decodes one line of UTF-8 bytes (without its line break).
    public static func decode(line: Data, number: Int) throws(DataError) -> Record {
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: line, options: [.fragmentsAllowed])
        } catch {
            throw DataError(line: number, field: nil, message: "malformed JSON: \(reason(error))")
        }
        guard let object = value as? [String: Any] else {
            throw DataError(line: number, field: nil, message: "expected a JSON object, found \(JSONValue.describe(value))")
        }
        do {
            return try RecordReader(object: object).record()
        } catch {
            throw DataError(line: number, field: error.field, message: error.message)
        }
    }

    /// Decodes JSON Lines text. See `decodeLines(_: Data)`.
    public static func decodeLines(_ text: String) -> (records: [LocatedRecord], errors: [DataError]) {
        decodeLines(Data(text.utf8))
    }

    /// Decodes JSON Lines: lines end with `\n` (or `\r\n`), blank lines are skipped, and lines
    /// are numbered from 1 as in the file. Returns the records of the valid lines and an error
    /// for each invalid one, in line order, at most `maxErrors` of them. Large inputs are
    /// decoded on every core.
    public static func decodeLines(_ data: Data) -> (records: [LocatedRecord], errors: [DataError]) {
        let lines = splitLines(data)
        let chunkCount = min(ProcessInfo.processInfo.activeProcessorCount, max(1, lines.count / 20_000))
        if chunkCount <= 1 { return decode(lines[...], of: data) }

        let chunkSize = (lines.count + chunkCount - 1) / chunkCount
        let results = ChunkResults(count: chunkCount)
        defer { results.deallocate() }
        DispatchQueue.concurrentPerform(iterations: chunkCount) { c in
            let range = (c * chunkSize)..<min(lines.count, (c + 1) * chunkSize)
            results.store(decode(lines[range], of: data), at: c)
        }
        var records: [LocatedRecord] = []
        var errors: [DataError] = []
        records.reserveCapacity(lines.count)
        for c in 0..<chunkCount {
            let part = results.take(c)
            records.append(contentsOf: part.records)
            errors.append(contentsOf: part.errors.prefix(maxErrors - errors.count))
        }
        return (records, errors)
    }

    /// One line of input: its number and its byte range (line break excluded).
    struct Line: Sendable {
        var number: Int
        var range: Range<Int>
    }

    /// The non-blank lines of `data`, with their numbers and byte ranges (offsets from
    /// `data.startIndex`). A final `\r` is not part of a line; a line of spaces and tabs is blank.
    static func splitLines(_ data: Data) -> [Line] {
        data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) -> [Line] in
            var lines: [Line] = []
            var start = 0
            var number = 0
            func add(_ end: Int) {
                number += 1
                var e = end
                if e > start && bytes[e - 1] == 0x0D { e -= 1 }
                var blank = true
                for i in start..<e where !(bytes[i] == 0x20 || bytes[i] == 0x09) {
                    blank = false
                    break
                }
                if !blank { lines.append(Line(number: number, range: start..<e)) }
            }
            var i = 0
            while i < bytes.count {
                if bytes[i] == 0x0A {
                    add(i)
                    start = i + 1
                }
                i += 1
            }
            if start < bytes.count { add(bytes.count) }
            return lines
        }
    }

    private static func decode(_ lines: ArraySlice<Line>, of data: Data) -> (records: [LocatedRecord], errors: [DataError]) {
        var records: [LocatedRecord] = []
        var errors: [DataError] = []
        records.reserveCapacity(lines.count)
        data.withUnsafeBytes { (all: UnsafeRawBufferPointer) in
            for line in lines {
                // A view of the line, not a slice of `data`: slices would share one reference
                // count between the threads decoding at once.
                let bytes = Data(
                    bytesNoCopy: UnsafeMutableRawPointer(mutating: all.baseAddress! + line.range.lowerBound),
                    count: line.range.count, deallocator: .none)
                do throws(DataError) {
                    records.append(LocatedRecord(line: line.number, record: try decode(line: bytes, number: line.number)))
                } catch {
                    errors.append(error)
                    if errors.count >= maxErrors { break }
                }
            }
        }
        return (records, errors)
    }

    /// The message of a Foundation JSON error, starting lowercase and without its final period.
    private static func reason(_ error: any Error) -> String {
        var text = ((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String) ?? "\(error)"
        while text.hasSuffix(".") { text.removeLast() }
        if let first = text.first, first.isUppercase, !(text.dropFirst().first?.isUppercase ?? false) {
            text = first.lowercased() + text.dropFirst()
        }
        return text
    }
}

/// Per-chunk results of a parallel decode: each task writes only its own slot.
private final class ChunkResults: @unchecked Sendable {
    typealias Part = (records: [LocatedRecord], errors: [DataError])
    private let slots: UnsafeMutablePointer<Part?>
    private let count: Int

    init(count: Int) {
        self.count = count
        slots = .allocate(capacity: count)
        slots.initialize(repeating: nil, count: count)
    }

    func store(_ part: Part, at i: Int) { slots[i] = part }
    func take(_ i: Int) -> Part { slots[i].take()! }
    func deallocate() {
        slots.deinitialize(count: count)
        slots.deallocate()
    }
}
