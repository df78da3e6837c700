/// A small, fast, seeded random number generator (Steele, Lea and Flood's SplitMix64): the
/// same seed gives the same stream on every machine and Swift version, which the standard
/// library's `SystemRandomNumberGenerator` and `Int.random(in:using:)` do not promise.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    @inline(__always)
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `0..<bound` (multiply-shift; the bias is below 2^-32 for the bounds used here).
    @inline(__always)
    public mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0)
        return Int(truncatingIfNeeded: next().multipliedFullWidth(by: UInt64(bound)).high)
    }

    /// A number in `range`.
    @inline(__always)
    public mutating func between(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + below(range.upperBound - range.lowerBound + 1)
    }

    /// True with probability `p`.
    @inline(__always)
    public mutating func chance(_ p: Double) -> Bool {
        Double(next() >> 11) * 0x1p-53 < p
    }

    /// One element of a non-empty array.
    @inline(__always)
    public mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    /// A uuid-like id (version-4 layout, 36 characters), as the platform's ids look.
    public mutating func uuid() -> String {
        let a = next(), b = next()
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        return String(unsafeUninitializedCapacity: 36) { buffer in
            var bits = (a, b)
            var nibble = 0
            for i in 0..<36 {
                if i == 8 || i == 13 || i == 18 || i == 23 {
                    buffer[i] = 0x2D
                    continue
                }
                let v: UInt64
                if i == 14 {
                    v = 4 // version
                } else if i == 19 {
                    v = 8 | (bits.1 & 3) // variant
                    bits.1 >>= 2
                } else if nibble < 16 {
                    v = bits.0 & 15
                    bits.0 >>= 4
                    nibble += 1
                } else {
                    v = bits.1 & 15
                    bits.1 >>= 4
                    nibble += 1
                }
                buffer[i] = hex[Int(v)]
            }
            return 36
        }
    }
}
