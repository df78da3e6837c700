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
}
