/// A hash map from byte-string keys to values that the check path can query with raw UTF-8
/// bytes (a slice of a query string, a C string) without building a `String`, so lookups
/// never allocate.
///
/// It is split into shards, each a small open-addressing table with its own copy-on-write
/// storage: a snapshot that changes a few keys copies only the shards those keys live in,
/// which is what lets a 100-record sync produce a new immutable directory in milliseconds
/// even at a million entries. Composite keys (`org` + `user`) are stored as the parts joined
/// by `ByteMap.separator`, a control character that ids may not contain.
struct ByteMap<Value: Sendable>: Sendable {
    static var separator: UInt8 { 0x1F }

    private var shards: [Shard]
    private let shardShift: UInt64
    private(set) var count = 0

    /// `shardBits` sets 2^shardBits shards; pick it for the largest expected size so that
    /// shards stay around a thousand entries.
    init(shardBits: Int) {
        shards = Array(repeating: Shard(), count: 1 << shardBits)
        shardShift = UInt64(64 - shardBits)
    }

    struct Shard: Sendable {
        var slots: [Int32] = []      // entry index, or -1; count is a power of two (or 0)
        var hashes: [UInt64] = []
        var keys: [String] = []
        var values: [Value] = []

        @inline(__always)
        func find(_ hash: UInt64, _ matches: (String) -> Bool) -> Int? {
            let cap = slots.count
            if cap == 0 { return nil }
            let mask = cap - 1
            var i = Int(truncatingIfNeeded: hash) & mask
            while true {
                let e = Int(slots[i])
                if e < 0 { return nil }
                if hashes[e] == hash && matches(keys[e]) { return e }
                i = (i + 1) & mask
            }
        }

        mutating func rebuildSlots(capacity: Int) {
            slots = Array(repeating: -1, count: capacity)
            let mask = capacity - 1
            for (e, h) in hashes.enumerated() {
                var i = Int(truncatingIfNeeded: h) & mask
                while slots[i] >= 0 { i = (i + 1) & mask }
                slots[i] = Int32(e)
            }
        }
    }

    @inline(__always)
    private func shardIndex(_ hash: UInt64) -> Int { Int(truncatingIfNeeded: hash >> shardShift) }

    // MARK: Lookup by bytes (the check path)

    // The shard is read in place, through the array's buffer, never copied: a copy would
    // retain its four arrays, and those reference counts are shared by every request
    // thread, so each lookup would bounce their cache lines between cores.

    @inline(__always)
    func find(_ key: UnsafeRawBufferPointer) -> Value? {
        let h = ByteHash.hash(key)
        let s = shardIndex(h)
        return shards.withUnsafeBufferPointer { shards in
            guard let e = shards[s].find(h, { ByteHash.equal($0, key) }) else { return nil }
            return shards[s].values[e]
        }
    }

    @inline(__always)
    func find(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Value? {
        let h = ByteHash.hash(a, b)
        let s = shardIndex(h)
        return shards.withUnsafeBufferPointer { shards in
            guard let e = shards[s].find(h, { ByteHash.equal($0, a, b) }) else { return nil }
            return shards[s].values[e]
        }
    }

    /// Whether `key` is present, without copying its value.
    @inline(__always)
    func contains(_ key: UnsafeRawBufferPointer) -> Bool {
        let h = ByteHash.hash(key)
        let s = shardIndex(h)
        return shards.withUnsafeBufferPointer { $0[s].find(h, { ByteHash.equal($0, key) }) != nil }
    }

    // MARK: Lookup and update by String (building)

    static func key(_ a: String, _ b: String) -> String {
        a + String(decoding: [separator], as: UTF8.self) + b
    }

    private static func hash(of key: String) -> UInt64 {
        var key = key
        return key.withUTF8 { ByteHash.hash(UnsafeRawBufferPointer($0)) }
    }

    subscript(key: String) -> Value? {
        get {
            let h = Self.hash(of: key)
            let shard = shards[shardIndex(h)]
            guard let e = shard.find(h, { $0.utf8.elementsEqual(key.utf8) }) else { return nil }
            return shard.values[e]
        }
        set {
            if let newValue { upsert(key, newValue) } else { remove(key) }
        }
    }

    subscript(a: String, b: String) -> Value? {
        get { self[Self.key(a, b)] }
        set { self[Self.key(a, b)] = newValue }
    }

    /// Inserts or replaces; returns the previous value.
    @discardableResult
    mutating func upsert(_ key: String, _ value: Value) -> Value? {
        let h = Self.hash(of: key)
        let s = shardIndex(h)
        if let e = shards[s].find(h, { $0.utf8.elementsEqual(key.utf8) }) {
            let old = shards[s].values[e]
            shards[s].values[e] = value
            return old
        }
        shards[s].hashes.append(h)
        shards[s].keys.append(key)
        shards[s].values.append(value)
        count += 1
        let n = shards[s].keys.count
        if n * 2 > shards[s].slots.count {
            shards[s].rebuildSlots(capacity: max(8, shards[s].slots.count * 2))
        } else {
            let mask = shards[s].slots.count - 1
            var i = Int(truncatingIfNeeded: h) & mask
            while shards[s].slots[i] >= 0 { i = (i + 1) & mask }
            shards[s].slots[i] = Int32(n - 1)
        }
        return nil
    }

    /// Removes; returns the removed value.
    @discardableResult
    mutating func remove(_ key: String) -> Value? {
        let h = Self.hash(of: key)
        let s = shardIndex(h)
        guard let e = shards[s].find(h, { $0.utf8.elementsEqual(key.utf8) }) else { return nil }
        let old = shards[s].values[e]
        shards[s].hashes.swapAt(e, shards[s].hashes.count - 1)
        shards[s].keys.swapAt(e, shards[s].keys.count - 1)
        shards[s].values.swapAt(e, shards[s].values.count - 1)
        shards[s].hashes.removeLast()
        shards[s].keys.removeLast()
        shards[s].values.removeLast()
        shards[s].rebuildSlots(capacity: shards[s].slots.count)
        count -= 1
        return old
    }

    /// Removes every entry for which `shouldRemove` is true.
    mutating func removeAll(where shouldRemove: (String, Value) -> Bool) -> [(String, Value)] {
        var removed: [(String, Value)] = []
        for s in shards.indices {
            guard shards[s].keys.indices.contains(where: { shouldRemove(shards[s].keys[$0], shards[s].values[$0]) })
            else { continue }
            var keep = Shard()
            for e in shards[s].keys.indices {
                let k = shards[s].keys[e], v = shards[s].values[e]
                if shouldRemove(k, v) {
                    removed.append((k, v))
                } else {
                    keep.hashes.append(shards[s].hashes[e])
                    keep.keys.append(k)
                    keep.values.append(v)
                }
            }
            var cap = 8
            while cap < keep.keys.count * 2 { cap *= 2 }
            keep.rebuildSlots(capacity: keep.keys.isEmpty ? 0 : cap)
            shards[s] = keep
        }
        count -= removed.count
        return removed
    }

    /// Every entry, in no particular order.
    func forEach(_ body: (String, Value) throws -> Void) rethrows {
        for shard in shards {
            for e in shard.keys.indices { try body(shard.keys[e], shard.values[e]) }
        }
    }

    var entries: [(key: String, value: Value)] {
        var out: [(key: String, value: Value)] = []
        out.reserveCapacity(count)
        forEach { out.append(($0, $1)) }
        return out
    }

    /// Splits a composite key into its two parts.
    static func parts(_ key: String) -> (String, String) {
        let utf8 = key.utf8
        guard let sep = utf8.firstIndex(of: separator) else { return (key, "") }
        return (String(key[..<sep]), String(key[key.utf8.index(after: sep)...]))
    }
}

/// The hash of byte strings used by every `ByteMap`: FNV-1a over 8-byte words with a final
/// mix, so that a key hashes the same whether it arrives as a `String` or as raw bytes, and a
/// composite key hashes the same as its parts joined with the separator.
enum ByteHash {
    @inline(__always)
    static func hash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        finish(absorb(0xcbf2_9ce4_8422_2325, key))
    }

    @inline(__always)
    static func hash(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> UInt64 {
        var h = absorb(0xcbf2_9ce4_8422_2325, a)
        h = (h ^ 0x1F) &* 0x0000_0100_0000_01b3
        return finish(absorb(h, b))
    }

    @inline(__always)
    private static func absorb(_ seed: UInt64, _ key: UnsafeRawBufferPointer) -> UInt64 {
        var h = seed
        for byte in key { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return h
    }

    @inline(__always)
    private static func finish(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    @inline(__always)
    static func equal(_ stored: String, _ key: UnsafeRawBufferPointer) -> Bool {
        var stored = stored
        return stored.withUTF8 { s in
            guard s.count == key.count else { return false }
            for i in 0..<s.count where s[i] != key[i] { return false }
            return true
        }
    }

    @inline(__always)
    static func equal(_ stored: String, _ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        var stored = stored
        return stored.withUTF8 { s in
            guard s.count == a.count + 1 + b.count, s[a.count] == 0x1F else { return false }
            for i in 0..<a.count where s[i] != a[i] { return false }
            let off = a.count + 1
            for i in 0..<b.count where s[off + i] != b[i] { return false }
            return true
        }
    }
}

/// Runs `body` with the UTF-8 bytes of `s`, without copying a native string.
@inline(__always)
func withBytes<R>(_ s: String, _ body: (UnsafeRawBufferPointer) -> R) -> R {
    var s = s
    return s.withUTF8 { body(UnsafeRawBufferPointer($0)) }
}

@inline(__always)
func bytesEqual(_ a: UnsafeRawBufferPointer, _ b: StaticString) -> Bool {
    guard a.count == b.utf8CodeUnitCount else { return false }
    let p = b.utf8Start
    for i in 0..<a.count where a[i] != p[i] { return false }
    return true
}
