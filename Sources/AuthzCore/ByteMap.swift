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
        func find(_ hash: UInt64, _ matches: (UnsafeRawBufferPointer) -> Bool) -> Int? {
            let cap = slots.count
            if cap == 0 { return nil }
            let mask = cap - 1
            var i = Int(truncatingIfNeeded: hash) & mask
            while true {
                let e = Int(slots[i])
                if e < 0 { return nil }
                if hashes[e] == hash && withBytes(keys[e], matches) { return e }
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
    //
    // A copied value costs a retain and a release per array or string it holds: the check
    // path uses `withValue` and copies out only the trivial fields it needs.

    /// The (shard, entry) holding `key`, with `hash` its `ByteHash`.
    /// The (shard, entry) holding the key that `matches`, with `hash` its `ByteHash`.
    @inline(__always)
    private func locate(_ hash: UInt64, _ matches: (UnsafeRawBufferPointer) -> Bool) -> (Int, Int)? {
        let s = shardIndex(hash)
        guard let e = shards[s].find(hash, matches) else { return nil }
        return (s, e)
    }

    // The shard is read in place, through the array's buffer, never copied: a copy would
    // retain its four arrays, and those reference counts are shared by every request
    // thread, so each lookup would bounce their cache lines between cores.

    @inline(__always)
    func find(_ key: UnsafeRawBufferPointer) -> Value? {
        guard let (s, e) = locate(ByteHash.hash(key), { ByteHash.equal($0, key) }) else { return nil }
        return shards[s].values[e]
    }

    @inline(__always)
    func find(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Value? {
        guard let (s, e) = locate(ByteHash.hash(a, b), { ByteHash.equal($0, a, b) }) else { return nil }
        return shards[s].values[e]
    }

    /// Runs `body` on the value under `key`, so that the caller copies out only what it reads.
    @inline(__always)
    func withValue<R>(_ key: UnsafeRawBufferPointer, _ body: (borrowing Value) -> R) -> R? {
        guard let (s, e) = locate(ByteHash.hash(key), { ByteHash.equal($0, key) }) else { return nil }
        return body(shards[s].values[e])
    }

    /// Runs `body` on the value under the composite key `a` + `b`.
    @inline(__always)
    func withValue<R>(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ body: (borrowing Value) -> R) -> R? {
        guard let (s, e) = locate(ByteHash.hash(a, b), { ByteHash.equal($0, a, b) }) else { return nil }
        return body(shards[s].values[e])
    }

    /// Whether `key` is present, without copying its value.
    @inline(__always)
    func contains(_ key: UnsafeRawBufferPointer) -> Bool {
        locate(ByteHash.hash(key), { ByteHash.equal($0, key) }) != nil
    }

    // MARK: Lookup and update by String (building)

    static func key(_ a: String, _ b: String) -> String {
        a + String(decoding: [separator], as: UTF8.self) + b
    }

    /// A stored key's hash: a composite key (one with the separator, which ids may not
    /// contain) hashes as its two parts, as `find(_:_:)` hashes them.
    private static func hash(of key: String) -> UInt64 {
        withBytes(key) { b in
            guard let sep = b.firstIndex(of: separator) else { return ByteHash.hash(b) }
            return ByteHash.hash(UnsafeRawBufferPointer(rebasing: b[..<sep]), UnsafeRawBufferPointer(rebasing: b[(sep + 1)...]))
        }
    }

    subscript(key: String) -> Value? {
        get {
            let h = Self.hash(of: key)
            let shard = shards[shardIndex(h)]
            guard let e = shard.find(h, { k in withBytes(key) { bytesEqual(k, $0) } }) else { return nil }
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
        if let e = shards[s].find(h, { k in withBytes(key) { bytesEqual(k, $0) } }) {
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
        guard let e = shards[s].find(h, { k in withBytes(key) { bytesEqual(k, $0) } }) else { return nil }
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

/// The hash of byte strings used by every `ByteMap`: 8 bytes at a time, each word folded in
/// with a 64x64->128-bit multiply (as wyhash and rapidhash do), the length mixed in, and a
/// final avalanche, so both the shard (high bits) and the slot (low bits) are well spread.
/// FNV-1a, its predecessor here, took one multiply per byte in a serial chain: ~300 cycles
/// for a 73-byte member key against ~40 for this. A composite key (`org` + `user`) hashes
/// its parts and combines them, so a lookup never joins them.
enum ByteHash {
    private static var k0: UInt64 { 0xA076_1D64_78BD_642F }
    private static var k1: UInt64 { 0xE703_7ED1_A0B4_28DB }
    private static var k2: UInt64 { 0x8EBC_6AF0_9C88_C6E3 }

    @inline(__always)
    private static func mum(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let p = a.multipliedFullWidth(by: b)
        return p.high ^ p.low
    }

    @inline(__always)
    static func hash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        finish(absorb(key))
    }

    @inline(__always)
    static func hash(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> UInt64 {
        finish(mum(absorb(a) ^ k2, absorb(b) ^ k1))
    }

    @inline(__always)
    private static func absorb(_ key: UnsafeRawBufferPointer) -> UInt64 {
        let n = key.count
        var h = k0 ^ UInt64(truncatingIfNeeded: n)
        guard let p = key.baseAddress, n > 0 else { return h }
        if n >= 8 {
            var i = 0
            while i + 8 < n {
                h = mum(h ^ p.loadUnaligned(fromByteOffset: i, as: UInt64.self), k1)
                i += 8
            }
            // The last word, overlapping the one before when `n` is not a multiple of 8 (the
            // length, mixed in above, tells such keys apart).
            return mum(h ^ p.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self), k2)
        }
        var w: UInt64 = 0
        if n >= 4 {
            w = UInt64(p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) << 32
                | UInt64(p.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self))
        } else {
            w = UInt64(p.load(fromByteOffset: 0, as: UInt8.self)) << 16
                | UInt64(p.load(fromByteOffset: n >> 1, as: UInt8.self)) << 8
                | UInt64(p.load(fromByteOffset: n - 1, as: UInt8.self))
        }
        return mum(h ^ w, k2)
    }

    @inline(__always)
    private static func finish(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    @inline(__always)
    static func equal(_ stored: UnsafeRawBufferPointer, _ key: UnsafeRawBufferPointer) -> Bool {
        bytesEqual(stored, key)
    }

    @inline(__always)
    static func equal(_ stored: UnsafeRawBufferPointer, _ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        guard stored.count == a.count + 1 + b.count, stored[a.count] == 0x1F else { return false }
        return bytesEqual(UnsafeRawBufferPointer(rebasing: stored[..<a.count]), a)
            && bytesEqual(UnsafeRawBufferPointer(rebasing: stored[(a.count + 1)...]), b)
    }
}

/// Runs `body` with the UTF-8 bytes of `s`, read in place: no copy of the string and no
/// retain (`var s = s; s.withUTF8` makes both). Small strings are spilled to the stack.
@inline(__always)
func withBytes<R>(_ s: borrowing String, _ body: (UnsafeRawBufferPointer) -> R) -> R {
    if let r = s.utf8.withContiguousStorageIfAvailable({ body(UnsafeRawBufferPointer($0)) }) { return r }
    var copy = copy s
    return copy.withUTF8 { body(UnsafeRawBufferPointer($0)) }
}

/// Byte equality, a word at a time.
@inline(__always)
func bytesEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    let n = a.count
    guard n == b.count else { return false }
    guard n > 0, let p = a.baseAddress, let q = b.baseAddress else { return true }
    var i = 0
    while i + 8 <= n {
        if p.loadUnaligned(fromByteOffset: i, as: UInt64.self) != q.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
        i += 8
    }
    while i < n {
        if p.load(fromByteOffset: i, as: UInt8.self) != q.load(fromByteOffset: i, as: UInt8.self) { return false }
        i += 1
    }
    return true
}

@inline(__always)
func bytesEqual(_ a: UnsafeRawBufferPointer, _ b: StaticString) -> Bool {
    guard a.count == b.utf8CodeUnitCount else { return false }
    let p = b.utf8Start
    for i in 0..<a.count where a[i] != p[i] { return false }
    return true
}
