/// A small JSON writer appending UTF-8 to a byte array: no tree, no `Encoder`, just the bytes
/// of the answer. Strings are escaped as RFC 8259 requires (quote, backslash, control
/// characters); everything else is copied as is.
struct JSONWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    /// Writes into `buffer`'s storage (emptied, its capacity kept), which it takes: `buffer` is
    /// left empty until `bytes` is handed back. Taking it, rather than copying the array, keeps
    /// the storage uniquely referenced: emptying a shared array would allocate a new one.
    init(taking buffer: inout [UInt8]) {
        swap(&bytes, &buffer)
        bytes.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    mutating func raw(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    @inline(__always)
    mutating func byte(_ b: UInt8) { bytes.append(b) }

    mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { string(bytes: UnsafeRawBufferPointer($0)) }
    }

    /// Writes `value` as a JSON string. `value` should be UTF-8; invalid sequences are
    /// copied as they are (callers pass text already validated by `String`).
    mutating func string(bytes value: UnsafeRawBufferPointer) {
        bytes.append(0x22)
        stringContent(value)
        bytes.append(0x22)
    }

    /// The inside of a JSON string: `value` escaped, without the quotes (a string written in
    /// pieces, such as a decision's message).
    mutating func stringContent(_ value: UnsafeRawBufferPointer) {
        var start = 0
        for i in 0..<value.count {
            let c = value[i]
            guard c < 0x20 || c == 0x22 || c == 0x5C else { continue }
            if start < i { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: value[start..<i])) }
            switch c {
            case 0x22: raw("\\\"")
            case 0x5C: raw("\\\\")
            case 0x0A: raw("\\n")
            case 0x0D: raw("\\r")
            case 0x09: raw("\\t")
            default:
                raw("\\u00")
                bytes.append(JSONWriter.hex[Int(c >> 4)])
                bytes.append(JSONWriter.hex[Int(c & 0xF)])
            }
            start = i + 1
        }
        if start < value.count { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: value[start...])) }
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    mutating func int<I: BinaryInteger>(_ v: I) {
        // Small and exact: digits of the magnitude, reversed.
        if v == 0 { bytes.append(0x30); return }
        var n = v.magnitude
        if v < 0 { bytes.append(0x2D) }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        withUnsafeMutableBytes(of: &digits) { d in
            while n > 0 && count < 20 {
                d[count] = 0x30 + UInt8(truncatingIfNeeded: n % 10)
                n /= 10
                count += 1
            }
            for i in stride(from: count - 1, through: 0, by: -1) { bytes.append(d[i]) }
        }
    }

    mutating func bool(_ v: Bool) { v ? raw("true") : raw("false") }

    /// `"key":` (the key is a literal, never user input).
    @inline(__always)
    mutating func key(_ k: StaticString) {
        bytes.append(0x22)
        raw(k)
        raw("\":")
    }

    mutating func stringArray(_ values: [String]) {
        byte(0x5B)
        for (i, v) in values.enumerated() {
            if i > 0 { byte(0x2C) }
            string(v)
        }
        byte(0x5D)
    }
}
