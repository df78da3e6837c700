import Foundation

/// What `RecordCodec.foundationDecode` does around `JSONSerialization` where it reads a line
/// its own way.
enum JSONText {
    private static let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")

    /// `line` with each U+FEFF written as bytes (EF BB BF) inside a string written as the escape
    /// `\ufeff` instead, or nil when it has none. JSONSerialization drops such a character where
    /// a run of a string's unescaped characters starts (`"\xEF\xBB\xBFbob"` read as `bob`), and
    /// keeps the escaped one; the two spell the same string, so this changes no line's meaning,
    /// only what Foundation makes of it. One outside strings is left: before the object
    /// Foundation skips it (as RFC 8259 allows), anywhere else it is malformed JSON either way.
    static func escapingByteOrderMarks(_ line: Data) -> Data? {
        line.withUnsafeBytes { (b: UnsafeRawBufferPointer) -> Data? in
            guard b.contains(0xEF) else { return nil }
            var out: Data? = nil
            var copied = 0 // bytes of `b` already in `out`
            var inString = false
            var i = 0
            while i < b.count {
                let c = b[i]
                if !inString {
                    inString = c == quote
                    i += 1
                } else if c == backslash {
                    i += 2
                } else if c == quote {
                    inString = false
                    i += 1
                } else if c == 0xEF, i + 2 < b.count, b[i + 1] == 0xBB, b[i + 2] == 0xBF {
                    if out == nil { out = Data(capacity: b.count + 5) }
                    out!.append(contentsOf: b[copied..<i])
                    out!.append(contentsOf: #"\ufeff"#.utf8)
                    i += 3
                    copied = i
                } else {
                    i += 1
                }
            }
            guard var out else { return nil }
            out.append(contentsOf: b[copied..<b.count])
            return out
        }
    }

    /// The first key of the object in `line` that repeats one before it, or nil. Foundation
    /// keeps the last of repeated keys, so that `"op":"delete","op":"upsert"` upserted;
    /// `distinct` is how many keys its object of the line has: with as many in the text, none
    /// repeats, and no key is decoded. `line` is one JSON object, as Foundation read it.
    static func repeatedKey(in line: Data, distinct: Int) -> String? {
        line.withUnsafeBytes { (b: UnsafeRawBufferPointer) -> String? in
            var keys: [Range<Int>] = [] // the object's own keys, each with its quotes
            var depth = 0
            var i = 0
            while i < b.count {
                switch b[i] {
                case quote:
                    let start = i
                    i += 1
                    while i < b.count && b[i] != quote { i += b[i] == backslash ? 2 : 1 }
                    i = min(i + 1, b.count)
                    // A string in the object itself is a key when a colon follows it.
                    var next = i
                    while next < b.count, [0x20, 0x09, 0x0A, 0x0D].contains(b[next]) { next += 1 }
                    if depth == 1, next < b.count, b[next] == UInt8(ascii: ":") { keys.append(start..<i) }
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
                default: break
                }
                i += 1
            }
            guard keys.count > distinct else { return nil }
            var seen = Set<String>()
            for range in keys {
                let key = (try? JSONSerialization.jsonObject(with: Data(b[range]), options: [.fragmentsAllowed])) as? String
                if let key, !seen.insert(key).inserted { return key }
            }
            return nil
        }
    }
}
