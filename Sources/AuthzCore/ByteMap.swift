/// A hash map from byte-string keys to values that the check path can query with raw UTF-8
/// bytes (a slice of a query string, a C string) without building a `String`, so lookups
/// never allocate.
///
/// It is split into shards, each a small open-addressing table with its own copy-on-write
/// storage: a snapshot that changes a few keys copies only the shards those keys live in,
/// which is what lets a 100-record sync produce a new immutable directory in milliseconds
/// even at a million entries. Composite keys (`org` + `user`) are stored as the parts joined
/// by `ByteMap.separator`, a control character that ids may not contain.
///
/// A shard is flat, so that a lookup touches few cache lines: one slot array of `UInt64`
/// (a 32-bit tag of the hash and the entry index, so a probe reads one word and rarely
/// visits an entry that does not match), one entry array (the hash, where the key's bytes
/// are, and the value, side by side) and one byte arena holding every key back to back.
/// A lookup is a slot, an entry and the key's bytes: three loads, not the six of a table of
/// `String` keys. The storage is reached through raw pointers held in `let` properties, so
/// reading it makes no retain and no exclusivity check.
struct ByteMap<Value: Sendable>: Sendable {
    static var separator: UInt8 { 0x1F }

    private var shards: [ByteMapShard<Value>]
    /// Where each shard's storage is, side by side (32 bytes a shard), so a lookup goes
    /// straight from the shard number to the slots without loading the shard object.
    /// Updated wherever `shards` is.
    private var heads: [ByteMapHead<Value>]
    private let shardShift: UInt64
    private(set) var count = 0

    /// The shards, for `storageStats`.
    var shardsForStats: [ByteMapShard<Value>] { shards }

    /// `shardBits` sets 2^shardBits shards; pick it for the largest expected size so that
    /// shards stay around a thousand entries.
    init(shardBits: Int) {
        let empty = ByteMapShard<Value>(entryCapacity: 0, arenaCapacity: 0)
        shards = Array(repeating: empty, count: 1 << shardBits)
        heads = Array(repeating: empty.head, count: 1 << shardBits)
        shardShift = UInt64(64 - shardBits)
    }

    @inline(__always)
    private func shardIndex(_ hash: UInt64) -> Int { Int(truncatingIfNeeded: hash >> shardShift) }

    /// Sizes every shard for `total` entries spread evenly (with room for the unlucky ones),
    /// so that building a large map rebuilds no table. Shards already holding entries keep them.
    mutating func reserve(_ total: Int, keyBytes: Int) {
        let n = shards.count
        // The mean and four standard deviations (entries per shard are ~Poisson): few
        // shards overflow (and grow), and little memory sits unused.
        let mean = Double(total) / Double(n)
        let perShard = Int(mean + 4 * mean.squareRoot()) + 4
        let bytes = Int(Double(keyBytes) / Double(max(total, 1)) * Double(perShard)) + 64
        for s in 0..<n where shards[s].count == 0 {
            shards[s] = ByteMapShard(entryCapacity: perShard, arenaCapacity: bytes)
            heads[s] = shards[s].head
        }
    }

    // MARK: Lookup by bytes (the check path)
    //
    // A copied value costs a retain and a release per array or string it holds: the check
    // path uses `withValue` and copies out only the trivial fields it needs.

    @inline(__always)
    func find(_ key: UnsafeRawBufferPointer) -> Value? {
        withValue(key) { copy $0 }
    }

    @inline(__always)
    func find(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Value? {
        withValue(a, b) { copy $0 }
    }

    /// Runs `body` on the value under `key`, so that the caller copies out only what it reads.
    @inline(__always)
    func withValue<R>(_ key: UnsafeRawBufferPointer, _ body: (borrowing Value) -> R) -> R? {
        let h = ByteHash.hash(key)
        let shard = heads[shardIndex(h)]
        guard let e = shard.find(h, { ByteHash.equal($0, key) }) else { return nil }
        return body(shard.entries[e].value)
    }

    /// Runs `body` on the value under the composite key `a` + `b`.
    @inline(__always)
    func withValue<R>(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ body: (borrowing Value) -> R) -> R? {
        let h = ByteHash.hash(a, b)
        let shard = heads[shardIndex(h)]
        guard let e = shard.find(h, { ByteHash.equal($0, a, b) }) else { return nil }
        return body(shard.entries[e].value)
    }

    /// Whether `key` is present, without copying its value.
    @inline(__always)
    func contains(_ key: UnsafeRawBufferPointer) -> Bool {
        withValue(key) { _ in true } ?? false
    }

    // MARK: Lookup and update by String (building)

    static func key(_ a: String, _ b: String) -> String {
        a + String(decoding: [separator], as: UTF8.self) + b
    }

    /// A stored key's hash: a composite key (one with the separator, which ids may not
    /// contain) hashes as its two parts, as `find(_:_:)` hashes them.
    @inline(__always)
    static func hash(bytes b: UnsafeRawBufferPointer) -> UInt64 {
        var i = 0
        while i < b.count && b[i] != separator { i += 1 }
        if i == b.count { return ByteHash.hash(b) }
        let sep = i
        return ByteHash.hash(UnsafeRawBufferPointer(rebasing: b[..<sep]), UnsafeRawBufferPointer(rebasing: b[(sep + 1)...]))
    }

    subscript(key: String) -> Value? {
        get { withBytes(key) { find($0) } }
        set {
            if let newValue { upsert(key, newValue) } else { remove(key) }
        }
    }

    subscript(a: String, b: String) -> Value? {
        get { withBytes(a) { a in withBytes(b) { b in find(a, b) } } }
        set {
            if let newValue { upsert(a, b, newValue) } else { remove(a, b) }
        }
    }

    /// The shard `s`, copied first if another snapshot shares it, with room for one more
    /// entry of `keyLength` bytes.
    @inline(__always)
    private mutating func uniqueShard(_ s: Int, adding keyLength: Int) -> ByteMapShard<Value> {
        if !isKnownUniquelyReferenced(&shards[s]) || !shards[s].hasRoom(keyLength) {
            shards[s] = shards[s].copy(adding: keyLength)
            heads[s] = shards[s].head
        }
        return shards[s]
    }

    /// Inserts or replaces the value under the key whose bytes `write` produces; returns the
    /// previous value.
    @inline(__always)
    private mutating func upsert(hash h: UInt64, length: Int, matches: (UnsafeRawBufferPointer) -> Bool,
                                 write: (UnsafeMutableRawPointer) -> Void, _ value: Value) -> Value? {
        let s = shardIndex(h)
        let shard = uniqueShard(s, adding: length)
        if let e = shard.find(h, matches) {
            let old = shard.entries[e].value
            shard.entries[e].value = value
            return old
        }
        shard.insert(hash: h, length: length, write: write, value)
        count += 1
        return nil
    }

    /// Inserts or replaces; returns the previous value.
    @discardableResult
    mutating func upsert(_ key: String, _ value: Value) -> Value? {
        withBytes(key) { k in
            upsert(hash: Self.hash(bytes: k), length: k.count, matches: { bytesEqual($0, k) },
                   write: { if k.count > 0 { $0.copyMemory(from: k.baseAddress!, byteCount: k.count) } }, value)
        }
    }

    /// Inserts or replaces the value under the composite key `a` + `b`, without joining them
    /// into a `String`; returns the previous value.
    @discardableResult
    mutating func upsert(_ a: String, _ b: String, _ value: Value) -> Value? {
        withBytes(a) { a in
            withBytes(b) { b in
                upsert(hash: ByteHash.hash(a, b), length: a.count + 1 + b.count, matches: { ByteHash.equal($0, a, b) },
                       write: { p in
                           if a.count > 0 { p.copyMemory(from: a.baseAddress!, byteCount: a.count) }
                           p.storeBytes(of: Self.separator, toByteOffset: a.count, as: UInt8.self)
                           if b.count > 0 { (p + a.count + 1).copyMemory(from: b.baseAddress!, byteCount: b.count) }
                       }, value)
            }
        }
    }

    /// Changes the value under `key` in place, if there is one.
    mutating func update(_ key: String, _ body: (inout Value) -> Void) {
        withBytes(key) { k in
            let h = Self.hash(bytes: k)
            let s = shardIndex(h)
            guard shards[s].find(h, { bytesEqual($0, k) }) != nil else { return }
            let shard = uniqueShard(s, adding: 0)
            body(&shard.entries[shard.find(h, { bytesEqual($0, k) })!].value)
        }
    }

    /// Changes the value under the composite key `a` + `b` in place, if there is one.
    mutating func update(_ a: String, _ b: String, _ body: (inout Value) -> Void) {
        withBytes(a) { a in
            withBytes(b) { b in
                let h = ByteHash.hash(a, b)
                let s = shardIndex(h)
                guard shards[s].find(h, { ByteHash.equal($0, a, b) }) != nil else { return }
                let shard = uniqueShard(s, adding: 0)
                body(&shard.entries[shard.find(h, { ByteHash.equal($0, a, b) })!].value)
            }
        }
    }

    @inline(__always)
    private mutating func remove(hash h: UInt64, matches: (UnsafeRawBufferPointer) -> Bool) -> Value? {
        let s = shardIndex(h)
        guard shards[s].find(h, matches) != nil else { return nil }
        let shard = uniqueShard(s, adding: 0)
        count -= 1
        return shard.remove(at: shard.find(h, matches)!)
    }

    /// Removes; returns the removed value.
    @discardableResult
    mutating func remove(_ key: String) -> Value? {
        withBytes(key) { k in remove(hash: Self.hash(bytes: k), matches: { bytesEqual($0, k) }) }
    }

    /// Removes the composite key `a` + `b`; returns the removed value.
    @discardableResult
    mutating func remove(_ a: String, _ b: String) -> Value? {
        withBytes(a) { a in withBytes(b) { b in remove(hash: ByteHash.hash(a, b), matches: { ByteHash.equal($0, a, b) }) } }
    }

    /// Removes every entry for which `shouldRemove` (given the key's bytes) is true; returns
    /// the removed entries.
    mutating func removeAll(where shouldRemove: (UnsafeRawBufferPointer, borrowing Value) -> Bool) -> [(String, Value)] {
        var removed: [(String, Value)] = []
        for s in shards.indices {
            let shard = shards[s]
            guard (0..<shard.count).contains(where: { shouldRemove(shard.key(at: $0), shard.entries[$0].value) }) else { continue }
            let unique = uniqueShard(s, adding: 0)
            var e = 0
            while e < unique.count {
                let k = unique.key(at: e)
                if shouldRemove(k, unique.entries[e].value) {
                    let name = String(decoding: k, as: UTF8.self)
                    removed.append((name, unique.remove(at: e)))
                    count -= 1
                } else {
                    e += 1
                }
            }
        }
        return removed
    }

    /// Every entry, in no particular order.
    func forEach(_ body: (String, Value) throws -> Void) rethrows {
        for shard in shards {
            for e in 0..<shard.count { try body(String(decoding: shard.key(at: e), as: UTF8.self), shard.entries[e].value) }
        }
    }

    /// Every entry's key bytes and value, in no particular order, without making `String`s.
    func forEachBytes(_ body: (UnsafeRawBufferPointer, borrowing Value) throws -> Void) rethrows {
        for shard in shards {
            for e in 0..<shard.count { try body(shard.key(at: e), shard.entries[e].value) }
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

/// Where one shard's storage is: what a lookup reads, trivially copied.
struct ByteMapHead<Value>: @unchecked Sendable {
    let slots: UnsafeMutablePointer<UInt64>
    let slotMask: Int
    let entries: UnsafeMutablePointer<ByteMapEntry<Value>>
    let arena: UnsafeMutablePointer<UInt8>

    /// The entry holding the key that `matches`, with `hash` its `ByteHash`.
    @inline(__always)
    func find(_ hash: UInt64, _ matches: (UnsafeRawBufferPointer) -> Bool) -> Int? {
        let tag = ByteMapShard<Value>.tag(hash)
        var i = Int(truncatingIfNeeded: hash) & slotMask
        while true {
            let slot = slots[i]
            if slot == 0 { return nil }
            if slot & 0xFFFF_FFFF_0000_0000 == tag {
                let e = Int(truncatingIfNeeded: slot & 0xFFFF_FFFF) &- 1
                let entry = entries + e
                if matches(UnsafeRawBufferPointer(start: arena + Int(entry.pointee.offset), count: Int(entry.pointee.length))) {
                    return e
                }
            }
            i = (i &+ 1) & slotMask
        }
    }
}

/// One entry of a shard: the key's hash (to rebuild the slots without rehashing), where its
/// bytes sit in the arena, and the value.
struct ByteMapEntry<Value> {
    var hash: UInt64
    var offset: UInt32
    var length: UInt32
    var value: Value
}

/// The storage of one shard. Its capacities are fixed: growing makes a new shard (`copy`).
/// Only a uniquely referenced shard is ever changed, so a snapshot that shares it never sees
/// a change.
final class ByteMapShard<Value>: @unchecked Sendable {
    /// 0 for an empty slot, else (tag << 32) | (entry index + 1), the tag being 32 bits of
    /// the hash that neither the shard nor the slot position uses.
    let slots: UnsafeMutablePointer<UInt64>
    let slotMask: Int
    let entries: UnsafeMutablePointer<ByteMapEntry<Value>>
    let entryCapacity: Int
    let arena: UnsafeMutablePointer<UInt8>
    let arenaCapacity: Int
    private(set) var count = 0
    private(set) var arenaUsed = 0

    /// Room for `entryCapacity` entries, with at least twice as many slots (a power of two).
    init(entryCapacity: Int, arenaCapacity: Int) {
        var slotCount = 1
        while slotCount < entryCapacity * 2 { slotCount *= 2 }
        slots = .allocate(capacity: slotCount)
        slots.initialize(repeating: 0, count: slotCount)
        slotMask = slotCount - 1
        self.entryCapacity = entryCapacity
        entries = .allocate(capacity: max(entryCapacity, 1))
        self.arenaCapacity = arenaCapacity
        arena = .allocate(capacity: max(arenaCapacity, 1))
    }

    deinit {
        entries.deinitialize(count: count)
        entries.deallocate()
        slots.deallocate()
        arena.deallocate()
    }

    @inline(__always)
    static func tag(_ hash: UInt64) -> UInt64 { (hash >> 20) << 32 }

    @inline(__always)
    func key(at e: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: arena + Int(entries[e].offset), count: Int(entries[e].length))
    }

    var head: ByteMapHead<Value> { ByteMapHead(slots: slots, slotMask: slotMask, entries: entries, arena: arena) }

    @inline(__always)
    func find(_ hash: UInt64, _ matches: (UnsafeRawBufferPointer) -> Bool) -> Int? {
        head.find(hash, matches)
    }

    /// The slot pointing at entry `e` (which exists).
    private func slot(of e: Int) -> Int {
        var i = Int(truncatingIfNeeded: entries[e].hash) & slotMask
        while Int(truncatingIfNeeded: slots[i] & 0xFFFF_FFFF) != e + 1 { i = (i + 1) & slotMask }
        return i
    }

    private func place(_ hash: UInt64, entry e: Int) {
        var i = Int(truncatingIfNeeded: hash) & slotMask
        while slots[i] != 0 { i = (i + 1) & slotMask }
        slots[i] = Self.tag(hash) | UInt64(e + 1)
    }

    func hasRoom(_ keyLength: Int) -> Bool {
        count < entryCapacity && arenaUsed + keyLength <= arenaCapacity
    }

    /// Appends an entry (the caller checked `hasRoom`); `write` fills the key's bytes.
    func insert(hash: UInt64, length: Int, write: (UnsafeMutableRawPointer) -> Void, _ value: Value) {
        write(UnsafeMutableRawPointer(arena + arenaUsed))
        (entries + count).initialize(to: ByteMapEntry(hash: hash, offset: UInt32(arenaUsed), length: UInt32(length), value: value))
        place(hash, entry: count)
        arenaUsed += length
        count += 1
    }

    /// Removes entry `e`: its slot by backward shift (so no tombstones), the last entry
    /// moved into its place. Its key bytes stay in the arena until the next copy.
    func remove(at e: Int) -> Value {
        var i = slot(of: e)
        slots[i] = 0
        var j = i
        while true {
            j = (j + 1) & slotMask
            let s = slots[j]
            if s == 0 { break }
            let home = Int(truncatingIfNeeded: entries[Int(truncatingIfNeeded: s & 0xFFFF_FFFF) - 1].hash) & slotMask
            // The entry at j may move back to i unless its home lies cyclically in (i, j].
            if (j - home) & slotMask >= (j - i) & slotMask {
                slots[i] = s
                slots[j] = 0
                i = j
            }
        }
        let old = (entries + e).move()
        let last = count - 1
        if e != last {
            let ls = slot(of: last)
            (entries + e).moveInitialize(from: entries + last, count: 1)
            slots[ls] = (slots[ls] & 0xFFFF_FFFF_0000_0000) | UInt64(e + 1)
        }
        count -= 1
        return old.value
    }

    /// A copy with room for at least one more entry of `keyLength` bytes (grown when full),
    /// the arena compacted.
    func copy(adding keyLength: Int) -> ByteMapShard<Value> {
        var live = 0
        for e in 0..<count { live += Int(entries[e].length) }
        var entryCapacity = max(self.entryCapacity, 4)
        if count + 1 > entryCapacity { entryCapacity *= 2 }
        var arenaCapacity = max(arenaCapacity, 64)
        while live + keyLength > arenaCapacity { arenaCapacity *= 2 }
        let next = ByteMapShard(entryCapacity: entryCapacity, arenaCapacity: arenaCapacity)
        for e in 0..<count {
            let k = key(at: e)
            next.insert(hash: entries[e].hash, length: k.count,
                        write: { if k.count > 0 { $0.copyMemory(from: k.baseAddress!, byteCount: k.count) } },
                        entries[e].value)
        }
        return next
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
