import AuthzCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The fast path of `RecordCodec`: decodes one ordinary JSON line straight from its bytes into
/// a `Record`, without Foundation.
///
/// Why it exists: the reference decoder (`RecordCodec.foundationDecode`) parses each line with
/// `JSONSerialization` into a `[String: Any]` of bridged values and reads the fields out of it,
/// a dozen allocations and many dynamic casts a line; at 2M lines that was most of a 1M
/// `sync --replace`. Records are flat objects whose values are strings, booleans, null or
/// arrays of strings, which a byte scanner reads in one pass.
///
/// The contract: `decode` returns the record the reference decoder returns for the same line,
/// or nil. Nil means "not sure", never "invalid": the caller then decodes the line with the
/// reference decoder, which gives the record or the error. So every error message still comes
/// from one place, and this type needs to be right only on what it accepts. It accepts one
/// JSON object whose keys are field names of `Field` (unescaped, each at most once), whose
/// values are strings (any JSON escape, valid UTF-8), `true`, `false`, `null` or arrays of
/// strings, with JSON whitespace (space, tab, CR, LF) between tokens, and that reads as a
/// valid record (`RecordReader`'s rules, mirrored in `record()`). It gives up on anything else,
/// among it duplicate keys (an error, which the reference decoder reports) and what Foundation
/// accepts but treats in its own way: trailing commas. (A U+FEFF written as bytes inside a string, which Foundation
/// drops where it starts one, the reference decoder has Foundation read escaped: it is kept.)
///
/// One decoder serves one thread; it keeps its buffers from line to line.
struct FastRecordDecoder {
    /// The field names a record line may have. The raw value is the field's bit in `seen`.
    enum Field: Int, CaseIterable {
        case kind, op, id, org, user, personal, suspended, suspendedUntil, email, emailVerified
        case role, assignments, permissions, expiresAt, status

        var name: StaticString {
            switch self {
            case .kind: "kind"
            case .op: "op"
            case .id: "id"
            case .org: "org"
            case .user: "user"
            case .personal: "personal"
            case .suspended: "suspended"
            case .suspendedUntil: "suspended_until"
            case .email: "email"
            case .emailVerified: "email_verified"
            case .role: "role"
            case .assignments: "assignments"
            case .permissions: "permissions"
            case .expiresAt: "expires_at"
            case .status: "status"
            }
        }

        var bit: UInt16 { 1 << UInt16(rawValue) }

        /// The field whose name is exactly `key`'s bytes. The switch only picks the one
        /// candidate worth comparing; the comparison decides.
        static func named(_ key: UnsafeBufferPointer<UInt8>) -> Field? {
            guard let first = key.first else { return nil }
            let candidate: Field
            switch first {
            case UInt8(ascii: "a"): candidate = .assignments
            case UInt8(ascii: "e"): candidate = key.count == 5 ? .email : key.count == 10 ? .expiresAt : .emailVerified
            case UInt8(ascii: "i"): candidate = .id
            case UInt8(ascii: "k"): candidate = .kind
            case UInt8(ascii: "o"): candidate = key.count == 2 ? .op : .org
            case UInt8(ascii: "p"): candidate = key.count == 8 ? .personal : .permissions
            case UInt8(ascii: "r"): candidate = .role
            case UInt8(ascii: "s"): candidate = key.count == 6 ? .status : key.count == 9 ? .suspended : .suspendedUntil
            case UInt8(ascii: "u"): candidate = .user
            default: return nil
            }
            return equals(key, candidate.name) ? candidate : nil
        }
    }

    /// A string of the line: the bytes between its quotes, with JSON escapes if `escaped`.
    struct Span {
        var start: Int
        var end: Int
        var escaped: Bool
    }

    /// A field's value, as positions in the line; strings are made only for the record.
    enum Value {
        case null
        case bool(Bool)
        case string(Span)
        /// An array of strings: these indices of `elements`.
        case strings(Range<Int>)
    }

    /// Why `decode` gives up; never seen outside this type.
    struct GiveUp: Error {}

    /// The line being decoded, valid only during `decode`.
    private var bytes = UnsafeBufferPointer<UInt8>(start: nil, count: 0)
    private var position = 0
    /// The fields the line has (`Field.bit`), and their values (valid where `seen` has the bit).
    private var seen: UInt16 = 0
    private var values = [Value](repeating: .null, count: Field.allCases.count)
    /// The elements of the line's arrays.
    private var elements: [Span] = []
    /// Unescaped bytes of one string.
    private var scratch: [UInt8] = []
    /// The last `org` decoded, given again to the next record of the same org: records come
    /// grouped by org (an export, the generator), and a shared string is one allocation where
    /// a million members would each hold a copy of their org's id.
    private var lastOrg = ""
    /// For each kind, the fields an upsert and a delete may have, from `RecordKind.allows`
    /// itself so the two paths cannot disagree on it.
    private let allowed: [(kind: RecordKind, upsert: UInt16, delete: UInt16)]

    init() {
        allowed = RecordKind.allCases.map { kind in
            var upsert: UInt16 = 0, delete: UInt16 = 0
            for field in Field.allCases {
                if kind.allows(field.name.description, isDelete: false) { upsert |= field.bit }
                if kind.allows(field.name.description, isDelete: true) { delete |= field.bit }
            }
            return (kind, upsert, delete)
        }
    }

    /// The record of one line (without its line break), or nil when the line is not one this
    /// decoder is sure about: then `RecordCodec.foundationDecode` decides.
    mutating func decode(_ line: UnsafeRawBufferPointer) -> Record? {
        guard let base = line.baseAddress else { return nil }
        bytes = UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: line.count)
        defer { bytes = UnsafeBufferPointer(start: nil, count: 0) }
        position = 0
        seen = 0
        elements.removeAll(keepingCapacity: true)
        do {
            try scanObject()
            return try record()
        } catch {
            return nil
        }
    }

    // MARK: Scanning

    private static let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")

    /// The next byte, or 0 at the end of the line (a NUL is never valid outside a string).
    private var next: UInt8 { position < bytes.count ? bytes[position] : 0 }

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x09, 0x0A, 0x0D: position += 1
            default: return
            }
        }
    }

    private mutating func expect(_ byte: UInt8) throws(GiveUp) {
        guard next == byte else { throw GiveUp() }
        position += 1
    }

    /// One object and nothing but whitespace around it; fills `seen` and `values`.
    private mutating func scanObject() throws(GiveUp) {
        skipWhitespace()
        try expect(UInt8(ascii: "{"))
        skipWhitespace()
        while true {
            // A key: `"` here also rules out `{}` and a trailing comma.
            guard next == Self.quote else { throw GiveUp() }
            let key = try scanString()
            guard !key.escaped,
                  let field = Field.named(UnsafeBufferPointer(rebasing: bytes[key.start..<key.end])),
                  seen & field.bit == 0
            else { throw GiveUp() }
            seen |= field.bit
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            values[field.rawValue] = try scanValue()
            skipWhitespace()
            if next == UInt8(ascii: "}") { break }
            try expect(UInt8(ascii: ","))
            skipWhitespace()
        }
        position += 1
        skipWhitespace()
        guard position == bytes.count else { throw GiveUp() }
    }

    /// A string, `true`, `false`, `null`, or an array of strings; numbers and objects give up.
    private mutating func scanValue() throws(GiveUp) -> Value {
        switch next {
        case Self.quote:
            return .string(try scanString())
        case UInt8(ascii: "t"):
            try scanLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try scanLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try scanLiteral("null")
            return .null
        case UInt8(ascii: "["):
            position += 1
            skipWhitespace()
            let first = elements.count
            if next == UInt8(ascii: "]") {
                position += 1
                return .strings(first..<first)
            }
            while true {
                guard next == Self.quote else { throw GiveUp() }
                elements.append(try scanString())
                skipWhitespace()
                if next == UInt8(ascii: "]") { break }
                try expect(UInt8(ascii: ","))
                skipWhitespace()
            }
            position += 1
            return .strings(first..<elements.count)
        default:
            throw GiveUp()
        }
    }

    private mutating func scanLiteral(_ literal: StaticString) throws(GiveUp) {
        let end = position + literal.utf8CodeUnitCount
        guard end <= bytes.count, Self.equals(UnsafeBufferPointer(rebasing: bytes[position..<end]), literal) else {
            throw GiveUp()
        }
        position = end
    }

    /// A string starting at its opening quote: checks its escapes and UTF-8, and returns where
    /// its contents are. Past it when done.
    private mutating func scanString() throws(GiveUp) -> Span {
        position += 1
        let start = position
        var escaped = false
        while true {
            skipPlainBytes()
            guard position < bytes.count else { break }
            let b = bytes[position]
            if b == Self.quote {
                position += 1
                return Span(start: start, end: position - 1, escaped: escaped)
            } else if b == Self.backslash {
                try scanEscape()
                escaped = true
            } else if b >= 0x80 {
                try scanMultibyteScalar()
            } else if b < 0x20 {
                throw GiveUp() // a control character must be escaped
            } else {
                position += 1
            }
        }
        throw GiveUp() // no closing quote
    }

    /// Skips the bytes of a string that need no look, printable ASCII but `"` and `\`, eight at
    /// a time (ids and emails are mostly that). Stops at or before the first byte that needs one.
    private mutating func skipPlainBytes() {
        let ones: UInt64 = 0x0101_0101_0101_0101, highBits: UInt64 = 0x8080_8080_8080_8080
        while position + 8 <= bytes.count {
            let word = UInt64(littleEndian: UnsafeRawPointer(bytes.baseAddress! + position).loadUnaligned(as: UInt64.self))
            // Per byte, the high bit of `(x - 1) & ~x` says x was 0, that of `(x - 0x20) & ~x` that
            // x < 0x20; the first flagged byte is the first such byte (a borrow only flags bytes
            // after it). `word` itself flags bytes from 0x80.
            let quote = word ^ (ones &* 0x22), backslash = word ^ (ones &* 0x5C)
            let flags = ((quote &- ones) & ~quote | (backslash &- ones) & ~backslash | (word &- ones &* 0x20) & ~word | word)
                & highBits
            if flags != 0 {
                position += flags.trailingZeroBitCount / 8
                return
            }
            position += 8
        }
    }

    /// One escape sequence, at its backslash. A `\u` escape of a surrogate must be a high one
    /// followed by a `\u` escape of a low one, as Foundation requires.
    private mutating func scanEscape() throws(GiveUp) {
        position += 1
        switch next {
        case Self.quote, Self.backslash, UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
             UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            position += 1
        case UInt8(ascii: "u"):
            let unit = try hex4(at: position + 1)
            position += 5
            switch unit {
            case 0xD800...0xDBFF:
                guard next == Self.backslash, position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u"),
                      case 0xDC00...0xDFFF = try hex4(at: position + 2)
                else { throw GiveUp() }
                position += 6
            case 0xDC00...0xDFFF:
                throw GiveUp()
            default:
                break
            }
        default:
            throw GiveUp()
        }
    }

    /// The 4 hex digits at `i` as a UTF-16 code unit.
    private func hex4(at i: Int) throws(GiveUp) -> UInt32 {
        guard i + 4 <= bytes.count else { throw GiveUp() }
        var value: UInt32 = 0
        for b in bytes[i..<(i + 4)] {
            let digit: UInt8
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = b - UInt8(ascii: "A") + 10
            default: throw GiveUp()
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    /// One well-formed UTF-8 sequence of 2 to 4 bytes (Unicode table 3-7: no overlong forms, no
    /// surrogates, nothing above U+10FFFF), at its lead byte.
    private mutating func scanMultibyteScalar() throws(GiveUp) {
        let lead = bytes[position]
        let length: Int
        var low: UInt8 = 0x80, high: UInt8 = 0xBF // the allowed range of the second byte
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; high = 0x9F
        case 0xF0: length = 4; low = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; high = 0x8F
        default: throw GiveUp()
        }
        guard position + length <= bytes.count, (low...high).contains(bytes[position + 1]) else { throw GiveUp() }
        for i in (position + 2)..<(position + length) where !(0x80...0xBF).contains(bytes[i]) { throw GiveUp() }
        position += length
    }

    private static func equals(_ bytes: UnsafeBufferPointer<UInt8>, _ s: StaticString) -> Bool {
        bytes.count == s.utf8CodeUnitCount && memcmp(bytes.baseAddress!, s.utf8Start, bytes.count) == 0
    }

    // MARK: The record, as RecordReader reads it

    /// `RecordReader.record()` over the scanned values. Every way `RecordReader` would fail
    /// gives up instead.
    private mutating func record() throws(GiveUp) -> Record {
        // `kind` and `op` compared as bytes: an escaped one gives up.
        guard case .string(let kindName)? = value(.kind), let recordKind = kind(named: kindName) else { throw GiveUp() }
        var isDelete = false
        switch value(.op) {
        case nil, .null?: break
        case .string(let op)? where equals(op, "upsert"): break
        case .string(let op)? where equals(op, "delete"): isDelete = true
        default: throw GiveUp()
        }
        var fields: UInt16 = 0
        for entry in allowed where entry.kind == recordKind { fields = isDelete ? entry.delete : entry.upsert }
        guard seen & ~fields == 0 else { throw GiveUp() }

        if isDelete {
            switch recordKind {
            case .org: return .delete(.org(try string(.id)))
            case .user: return .delete(.user(try string(.id)))
            case .member: return .delete(.member(org: try string(.org), user: try string(.user)))
            case .role: return .delete(.role(org: try string(.org), id: try string(.id)))
            case .apiKey: return .delete(.apiKey(try string(.id)))
            case .invitation: return .delete(.invitation(try string(.id)))
            }
        }
        switch recordKind {
        case .org:
            return .org(.init(
                id: try string(.id), personal: try bool(.personal), suspended: try bool(.suspended),
                suspendedUntil: try timestamp(.suspendedUntil)))
        case .user:
            return .user(.init(id: try string(.id), email: try optionalString(.email), emailVerified: try bool(.emailVerified)))
        case .member:
            return .member(.init(
                org: try string(.org), user: try string(.user), role: try string(.role),
                assignments: try strings(.assignments, required: false, atMost: Directory.maxAssignments)))
        case .role:
            return .role(.init(org: try string(.org), id: try string(.id), permissions: try strings(.permissions, required: true)))
        case .apiKey:
            return .apiKey(.init(
                id: try string(.id), org: try string(.org), user: try string(.user),
                permissions: try strings(.permissions, required: false), expiresAt: try timestamp(.expiresAt)))
        case .invitation:
            return .invitation(.init(
                id: try string(.id), org: try string(.org), email: try string(.email), role: try string(.role),
                assignments: try strings(.assignments, required: false, atMost: Directory.maxAssignments), status: try string(.status),
                expiresAt: try timestamp(.expiresAt)))
        }
    }

    /// The kind whose name is exactly the bytes of `span`, as `Field.named` finds fields.
    private func kind(named span: Span) -> RecordKind? {
        guard !span.escaped else { return nil }
        let candidate: RecordKind
        switch span.end - span.start {
        case 3: candidate = .org
        case 4: candidate = bytes[span.start] == UInt8(ascii: "u") ? .user : .role
        case 6: candidate = .member
        case 7: candidate = .apiKey
        case 10: candidate = .invitation
        default: return nil
        }
        var name = candidate.rawValue
        return name.withUTF8 { equals(span, $0) } ? candidate : nil
    }

    private func equals(_ span: Span, _ s: StaticString) -> Bool {
        !span.escaped && Self.equals(UnsafeBufferPointer(rebasing: bytes[span.start..<span.end]), s)
    }

    private func equals(_ span: Span, _ other: UnsafeBufferPointer<UInt8>) -> Bool {
        guard span.end - span.start == other.count else { return false }
        for i in 0..<other.count where bytes[span.start + i] != other[i] { return false }
        return true
    }

    private func value(_ field: Field) -> Value? {
        seen & field.bit != 0 ? values[field.rawValue] : nil
    }

    /// Present and a string.
    private mutating func string(_ field: Field) throws(GiveUp) -> String {
        guard case .string(let span)? = value(field) else { throw GiveUp() }
        guard field == .org, !span.escaped else { return text(span) }
        let raw = UnsafeBufferPointer(rebasing: bytes[span.start..<span.end])
        let same = lastOrg.utf8.withContiguousStorageIfAvailable { last in
            last.count == raw.count && (raw.isEmpty || memcmp(last.baseAddress!, raw.baseAddress!, raw.count) == 0)
        } ?? false
        if !same { lastOrg = text(span) }
        return lastOrg
    }

    /// Absent or null is nil.
    private mutating func optionalString(_ field: Field) throws(GiveUp) -> String? {
        switch value(field) {
        case nil, .null?: return nil
        case .string(let span)?: return text(span)
        default: throw GiveUp()
        }
    }

    /// Absent or null is false.
    private func bool(_ field: Field) throws(GiveUp) -> Bool {
        switch value(field) {
        case nil, .null?: return false
        case .bool(let b)?: return b
        default: throw GiveUp()
        }
    }

    /// When not required, absent or null is empty.
    /// More than `limit` strings: given up (the reference decoder says why).
    private mutating func strings(_ field: Field, required: Bool, atMost limit: Int = .max) throws(GiveUp) -> [String] {
        switch value(field) {
        case nil, .null?:
            if required { throw GiveUp() }
            return []
        case .strings(let indices)?:
            guard indices.count <= limit else { throw GiveUp() }
            var out: [String] = []
            out.reserveCapacity(indices.count)
            for i in indices { out.append(text(elements[i])) }
            return out
        default:
            throw GiveUp()
        }
    }

    /// Absent or null is nil.
    private mutating func timestamp(_ field: Field) throws(GiveUp) -> Timestamp? {
        guard let text = try optionalString(field) else { return nil }
        guard let t = Timestamp(rfc3339: text) else { throw GiveUp() }
        return t
    }

    /// The contents of a scanned string. Its UTF-8 and escapes were checked by `scanString`, so
    /// `String(decoding:)` has nothing to repair.
    private mutating func text(_ span: Span) -> String {
        guard span.escaped else { return String(decoding: UnsafeBufferPointer(rebasing: bytes[span.start..<span.end]), as: UTF8.self) }
        scratch.removeAll(keepingCapacity: true)
        var i = span.start
        while i < span.end {
            let b = bytes[i]
            guard b == Self.backslash else {
                scratch.append(b)
                i += 1
                continue
            }
            let escape = bytes[i + 1]
            i += 2
            switch escape {
            case UInt8(ascii: "b"): scratch.append(0x08)
            case UInt8(ascii: "f"): scratch.append(0x0C)
            case UInt8(ascii: "n"): scratch.append(0x0A)
            case UInt8(ascii: "r"): scratch.append(0x0D)
            case UInt8(ascii: "t"): scratch.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = (try? hex4(at: i)) ?? 0
                i += 4
                if (0xD800...0xDBFF).contains(scalar) {
                    let low = (try? hex4(at: i + 2)) ?? 0
                    scalar = 0x10000 + (scalar - 0xD800) << 10 + (low - 0xDC00)
                    i += 6
                }
                UTF8.encode(Unicode.Scalar(scalar) ?? "\u{FFFD}") { scratch.append($0) }
            default: scratch.append(escape) // `"`, `\`, `/`
            }
        }
        return String(decoding: scratch, as: UTF8.self)
    }
}
