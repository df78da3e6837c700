import Foundation
#if canImport(Glibc)
import Glibc
#endif

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
        line.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Data? in
            guard let b = raw.baseAddress?.assumingMemoryBound(to: UInt8.self), memchr(b, 0xEF, raw.count) != nil else { return nil }
            let n = raw.count
            var out: Data? = nil
            var copied = 0 // bytes of `line` already in `out`
            var at = 0
            // From string to string (`stringEnd`, as `repeatedKey` goes): an escape is ASCII, so
            // within a string the three bytes can only be the character itself.
            while at < n, let q = memchr(b + at, Int32(quote), n - at) {
                let open = b.distance(to: q.assumingMemoryBound(to: UInt8.self))
                let end = stringEnd(b, n, from: open + 1)
                var i = open + 1
                while i + 3 <= end {
                    if b[i] == 0xEF, b[i + 1] == 0xBB, b[i + 2] == 0xBF {
                        if out == nil { out = Data(capacity: n + 5) }
                        out!.append(b + copied, count: i - copied)
                        out!.append(contentsOf: #"\ufeff"#.utf8)
                        i += 3
                        copied = i
                    } else {
                        i += 1
                    }
                }
                at = end
            }
            guard var out else { return nil }
            out.append(b + copied, count: n - copied)
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
        json.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> String? in
            guard let b = raw.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return nil }
            let n = raw.count
            var keys: [Key] = []  // the keys of the open objects, innermost last
            var opens: [Int] = [] // each open container: where its keys start in `keys`, -1 for an array
            // An object's first 16 keys are compared one by one (a check has 4); past them, by
            // a set (by where the object's keys start), so that no object costs more than
            // linear time: one of 40k keys took 86 s compared pairwise.
            var sets: [Int: KeySet] = [:]
            keys.reserveCapacity(16)
            opens.reserveCapacity(8)
            var i = 0
            while i < n {
                switch b[i] {
                case quote:
                    let start = i
                    i = stringEnd(b, n, from: i + 1)
                    var next = i
                    while next < n, b[next] == 0x20 || b[next] == 0x09 || b[next] == 0x0A || b[next] == 0x0D { next += 1 }
                    guard next < n, b[next] == UInt8(ascii: ":"), let first = opens.last, first >= 0,
                          !topLevelOnly || opens.count == 1 else { continue }
                    let key = Key(b, start..<i)
                    if let set = sets[first] {
                        if !set.keys.insert(key.bytes(b)).inserted { return key.text(b) }
                    } else if keys.count - first < 16 {
                        for other in keys[first...] where other.same(as: key, b) { return key.text(b) }
                        keys.append(key)
                    } else {
                        let set = KeySet(Set(keys[first...].map { $0.bytes(b) }))
                        if !set.keys.insert(key.bytes(b)).inserted { return key.text(b) }
                        sets[first] = set
                    }
                    continue
                case UInt8(ascii: "{"): opens.append(keys.count)
                case UInt8(ascii: "["): opens.append(-1)
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    if let first = opens.popLast(), first >= 0 {
                        keys.removeSubrange(first...)
                        if !sets.isEmpty { sets[first] = nil }
                    }
                default: break
                }
                i += 1
            }
            return nil
        }
    }

    /// The keys of one large object (a class, so that inserting never copies the set).
    private final class KeySet {
        var keys: Set<[UInt8]>
        init(_ keys: Set<[UInt8]>) { self.keys = keys }
    }

    /// A key as written: its contents between the quotes, and for one with an escape its
    /// decoded UTF-8 (decoded once), which is what keys compare by.
    private struct Key {
        let contents: Range<Int>
        let decoded: [UInt8]?
        init(_ b: UnsafePointer<UInt8>, _ quoted: Range<Int>) {
            contents = (quoted.lowerBound + 1)..<(quoted.upperBound - 1)
            if memchr(b + contents.lowerBound, Int32(backslash), contents.count) == nil {
                decoded = nil
            } else {
                let text = (try? JSONSerialization.jsonObject(with: Data(bytes: b + quoted.lowerBound, count: quoted.count),
                                                               options: [.fragmentsAllowed])) as? String
                decoded = Array((text ?? "").utf8)
            }
        }
        func withBytes<R>(_ b: UnsafePointer<UInt8>, _ body: (UnsafeRawBufferPointer) -> R) -> R {
            if let decoded { return decoded.withUnsafeBytes(body) }
            return body(UnsafeRawBufferPointer(start: b + contents.lowerBound, count: contents.count))
        }
        func same(as other: Key, _ b: UnsafePointer<UInt8>) -> Bool {
            withBytes(b) { x in other.withBytes(b) { y in x.count == y.count && (x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0) } }
        }
        func text(_ b: UnsafePointer<UInt8>) -> String { withBytes(b) { String(decoding: $0, as: UTF8.self) } }
        func bytes(_ b: UnsafePointer<UInt8>) -> [UInt8] { withBytes(b) { Array($0) } }
    }

    /// Just past the quote that closes the string whose contents start at `i`: the next
    /// quote (found by `memchr`) that an even number of backslashes precedes.
    private static func stringEnd(_ b: UnsafePointer<UInt8>, _ n: Int, from i: Int) -> Int {
        var at = i
        while at < n, let q = memchr(b + at, Int32(quote), n - at) {
            let end = b.distance(to: q.assumingMemoryBound(to: UInt8.self))
            var slashes = 0
            while end - slashes - 1 >= i && b[end - slashes - 1] == backslash { slashes += 1 }
            if slashes % 2 == 0 { return end + 1 }
            at = end + 1
        }
        return n
    }

}
