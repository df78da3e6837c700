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
///
/// Two decoders read a line: `FastRecordDecoder` takes the ordinary lines straight from their
/// bytes, and gives any line it is not sure of to the reference decoder (`foundationDecode`:
/// JSONSerialization, then `RecordReader`), which also writes every error message.
public enum RecordCodec {
    /// `decodeLines` stops collecting errors after this many.
    public static let maxErrors = 100

    /// Decodes one line (without its line break); `number` is its 1-based line number, used in errors.
    public static func decode(line: String, number: Int) throws(DataError) -> Record {
        try decode(line: Data(line.utf8), number: number)
    }

    /// Decodes one line of UTF-8 bytes (without its line break).
    public static func decode(line: Data, number: Int) throws(DataError) -> Record {
        var fast = FastRecordDecoder()
        if let record = line.withUnsafeBytes({ fast.decode($0) }) { return record }
        return try foundationDecode(line: line, number: number)
    }

    /// The reference decoder: `JSONSerialization`, then `RecordReader`. It decides every line
    /// `FastRecordDecoder` is not sure of, and writes every error message.
    static func foundationDecode(line: Data, number: Int) throws(DataError) -> Record {
        // Foundation would read a UTF-16 or UTF-32 line (told by its NUL bytes), which the
        // byte scans below would not see through; JSON text never holds a NUL byte.
        if line.contains(0) {
            throw DataError(line: number, field: nil, message: "the line holds a NUL byte: JSON Lines are UTF-8 text (UTF-16 and UTF-32 are not read)")
        }
        // A U+FEFF written as bytes is read as the escaped one, which Foundation keeps.
        let escaped = JSONText.escapingByteOrderMarks(line)
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: escaped ?? line, options: [.fragmentsAllowed])
        } catch {
            // The line's own error, whose positions are those of the line as sent.
            var shown = error
            if escaped != nil {
                do { _ = try JSONSerialization.jsonObject(with: line, options: [.fragmentsAllowed]) } catch { shown = error }
            }
            throw DataError(line: number, field: nil, message: "malformed JSON: \(reason(shown))")
        }
        guard let object = value as? [String: Any] else {
            throw DataError(line: number, field: nil, message: "expected a JSON object, found \(JSONValue.describe(value))")
        }
        if let key = JSONText.repeatedKey(in: escaped ?? line, topLevelOnly: true) {
            let quoted = Identifier.quotable(key)
            throw DataError(line: number, field: quoted, message: "duplicate field `\(quoted)`; each field may appear only once")
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
        if lines.isEmpty { return ([], []) }
        let (chunkCount, chunkSize) = chunks(lines.count)
        var errors: [DataError] = []
        // Each chunk writes its records into the result from the place of its first line, so
        // they are never copied (a copy retains every string of 2M records, then releases them).
        let records = [LocatedRecord](unsafeUninitializedCapacity: lines.count) { buffer, initialized in
            let output = buffer.baseAddress!
            if chunkCount == 1 {
                (initialized, errors) = decode(lines[...], of: data, into: output)
                return
            }
            let results = ChunkResults(count: chunkCount, output: output)
            defer { results.deallocate() }
            onThreads(chunkCount) { c in
                let range = (c * chunkSize)..<min(lines.count, (c + 1) * chunkSize)
                results.store(decode(lines[range], of: data, into: results.output + range.lowerBound), at: c)
            }
            // Close the gaps the lines with errors left.
            for c in 0..<chunkCount {
                let part = results.take(c)
                if c * chunkSize != initialized {
                    (output + initialized).moveInitialize(from: output + c * chunkSize, count: part.count)
                }
                initialized += part.count
                errors.append(contentsOf: part.errors.prefix(maxErrors - errors.count))
            }
        }
        return (records, errors)
    }

    /// Checks JSON Lines as `decodeLines` does, keeping only the errors (the same, in the same
    /// order) and how many records are valid (all of them when there are fewer than
    /// `maxErrors` errors): for input that is sent on as it is (`authz sync --replace` to a
    /// server). The records are decoded a window of lines at a time into a reused buffer and
    /// dropped, so the memory it takes does not grow with the input: at a million memberships,
    /// decoding them all took ~640 MB more and ~155k more page faults.
    public static func checkLines(_ data: Data) -> (count: Int, errors: [DataError]) {
        let lines = splitLines(data)
        if lines.isEmpty { return (0, []) }
        let (chunkCount, chunkSize) = chunks(lines.count)
        let window = 8192
        let parts = PartResults(count: chunkCount)
        defer { parts.deallocate() }
        onThreads(chunkCount) { c in
            let range = (c * chunkSize)..<min(lines.count, (c + 1) * chunkSize)
            let buffer = UnsafeMutablePointer<LocatedRecord>.allocate(capacity: window)
            defer { buffer.deallocate() }
            var count = 0
            var errors: [DataError] = []
            var start = range.lowerBound
            while start < range.upperBound && errors.count < maxErrors {
                let part = decode(lines[start..<min(start + window, range.upperBound)], of: data, into: buffer)
                buffer.deinitialize(count: part.count)
                count += part.count
                errors.append(contentsOf: part.errors.prefix(maxErrors - errors.count))
                start += window
            }
            parts.store((count, errors), at: c)
        }
        var count = 0
        var errors: [DataError] = []
        for c in 0..<chunkCount {
            let part = parts.take(c)
            count += part.count
            errors.append(contentsOf: part.errors.prefix(maxErrors - errors.count))
        }
        return (count, errors)
    }

    /// How many parts `lineCount` lines are decoded in, one per core but no part under 20,000
    /// lines when there are several, and the lines in each part but the last.
    private static func chunks(_ lineCount: Int) -> (count: Int, size: Int) {
        let count = min(ProcessInfo.processInfo.activeProcessorCount, max(1, lineCount / 20_000))
        return (count, (lineCount + count - 1) / count)
    }

    /// Runs `body(0)` ... `body(count - 1)` at once: the last on the calling thread, the others
    /// on new threads. Not `DispatchQueue.concurrentPerform`: a new thread inherits the
    /// caller's scheduling priority, and the server decodes a sync on a thread below its
    /// request threads' priority, which Dispatch's workers would ignore.
    static func onThreads(_ count: Int, _ body: (Int) -> Void) {
        // POSIX threads, joined before returning: the closure is borrowed (through a pointer)
        // only while every thread that runs it is alive.
        withoutActuallyEscaping(body) { body in
            withUnsafePointer(to: body) { shared in
                var threads: [pthread_t] = []
                for i in 0..<(count - 1) {
                    let task = Unmanaged.passRetained(ThreadTask(body: shared, index: i)).toOpaque()
                    var thread = pthread_t()
                    let started = pthread_create(&thread, nil, { raw in
                        let task = Unmanaged<ThreadTask>.fromOpaque(raw!).takeRetainedValue()
                        task.body.pointee(task.index)
                        return nil
                    }, task)
                    if started == 0 {
                        threads.append(thread)
                    } else {
                        // No thread to be had: do its part here.
                        Unmanaged<ThreadTask>.fromOpaque(task).release()
                        body(i)
                    }
                }
                body(count - 1)
                for thread in threads { pthread_join(thread, nil) }
            }
        }
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
            guard let base = bytes.baseAddress else { return lines }
            while start < bytes.count {
                let end = memchr(base + start, 0x0A, bytes.count - start).map { base.distance(to: $0) } ?? bytes.count
                add(end)
                start = end + 1
            }
            return lines
        }
    }

    /// Decodes `lines` into `output`, one record after the other, and returns how many it wrote
    /// and the errors (stopping at `maxErrors`).
    private static func decode(
        _ lines: ArraySlice<Line>, of data: Data, into output: UnsafeMutablePointer<LocatedRecord>
    ) -> (count: Int, errors: [DataError]) {
        var count = 0
        var errors: [DataError] = []
        var fast = FastRecordDecoder()
        data.withUnsafeBytes { (all: UnsafeRawBufferPointer) in
            for line in lines {
                if let record = fast.decode(UnsafeRawBufferPointer(rebasing: all[line.range])) {
                    (output + count).initialize(to: LocatedRecord(line: line.number, record: record))
                    count += 1
                    continue
                }
                // A view of the line, not a slice of `data`: slices would share one reference
                // count between the threads decoding at once.
                let bytes = Data(
                    bytesNoCopy: UnsafeMutableRawPointer(mutating: all.baseAddress! + line.range.lowerBound),
                    count: line.range.count, deallocator: .none)
                do throws(DataError) {
                    let record = try foundationDecode(line: bytes, number: line.number)
                    (output + count).initialize(to: LocatedRecord(line: line.number, record: record))
                    count += 1
                } catch {
                    errors.append(error)
                    if errors.count >= maxErrors { break }
                }
            }
        }
        return (count, errors)
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

/// One thread's share of `onThreads`: the closure (borrowed) and which part to run.
private final class ThreadTask {
    let body: UnsafePointer<(Int) -> Void>
    let index: Int
    init(body: UnsafePointer<(Int) -> Void>, index: Int) {
        self.body = body
        self.index = index
    }
}

/// Per-chunk results of a parallel decode: each task writes only its own slot.
private class PartResults: @unchecked Sendable {
    typealias Part = (count: Int, errors: [DataError])
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

/// `PartResults` and the records' shared output: each task also writes only its own part of
/// `output`.
private final class ChunkResults: PartResults, @unchecked Sendable {
    let output: UnsafeMutablePointer<LocatedRecord>

    init(count: Int, output: UnsafeMutablePointer<LocatedRecord>) {
        self.output = output
        super.init(count: count)
    }
}
