import Foundation

/// What `RecordCodec.foundationDecode` (and the server, for check bodies) does around
/// `JSONSerialization` where it reads JSON its own way.
public enum JSONText {
    private static let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")

    /// `line` with each U+FEFF written as bytes (EF BB BF) inside a string written as the escape
    /// `\ufeff` instead, or nil when it has none. JSONSerialization drops such a character where
    /// a run of a string's unescaped characters starts (`"\xEF\xBB\xBFbob"` read as `bob`), and
    /// keeps the escaped one; the two spell the same string, so this changes no line's meaning,
    /// only what Foundation makes of it. One outside strings is left: before the object
    /// Foundation skips it (as RFC 8259 allows), anywhere else it is malformed JSON either way.
    public static func escapingByteOrderMarks(_ line: Data) -> Data? {
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

    /// The first key that repeats within one object of `json`, at any depth, or nil:
    /// `{"checks":[{"subject":"a","subject":"b"}]}` names `subject`. Foundation keeps the last
    /// of repeated keys (so a data line's `"op":"delete","op":"upsert"` upserted), where
    /// another reader (a proxy) may take the first. Keys are compared
    /// as written, and decoded only when one has an escape; `json` is valid JSON (Foundation
    /// read it), so strings and brackets pair up.
    /// `topLevelOnly`: only the outermost object's keys (a data line, whose nested values are
    /// refused by type anyway).
    public static func repeatedKey(in json: Data, topLevelOnly: Bool = false) -> String? {
        json.withUnsafeBytes { (b: UnsafeRawBufferPointer) -> String? in
            var keys: [Range<Int>] = [] // the keys of the open objects, innermost last, quotes included
            var opens: [Int] = []       // each open container: where its keys start in `keys`, -1 for an array
            var i = 0
            while i < b.count {
                switch b[i] {
                case quote:
                    let start = i
                    i += 1
                    while i < b.count && b[i] != quote { i += b[i] == backslash ? 2 : 1 }
                    i = min(i + 1, b.count)
                    var next = i
                    while next < b.count, [0x20, 0x09, 0x0A, 0x0D].contains(b[next]) { next += 1 }
                    if let first = opens.last, first >= 0, !topLevelOnly || opens.count == 1,
                       next < b.count, b[next] == UInt8(ascii: ":") {
                        let key = start..<i
                        for other in keys[first...] where sameKey(b, other, key) { return decodedKey(b, key) }
                        keys.append(key)
                    }
                    continue
                case UInt8(ascii: "{"): opens.append(keys.count)
                case UInt8(ascii: "["): opens.append(-1)
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    if let first = opens.popLast(), first >= 0 { keys.removeSubrange(first...) }
                default: break
                }
                i += 1
            }
            return nil
        }
    }

    private static func sameKey(_ b: UnsafeRawBufferPointer, _ x: Range<Int>, _ y: Range<Int>) -> Bool {
        let escaped = b[x].contains(backslash) || b[y].contains(backslash)
        if !escaped { return b[x].elementsEqual(b[y]) }
        return decodedKey(b, x) == decodedKey(b, y)
    }

    private static func decodedKey(_ b: UnsafeRawBufferPointer, _ r: Range<Int>) -> String {
        (try? JSONSerialization.jsonObject(with: Data(b[r]), options: [.fragmentsAllowed])) as? String
            ?? String(decoding: b[r].dropFirst().dropLast(), as: UTF8.self)
    }
}
