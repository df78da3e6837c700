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
/// (12 bits of the hash as a tag, the entry index, and where the key's bytes are in the
/// arena, so a probe reads one word, rarely visits a key that does not match, and goes from
/// the slot to the key without reading the entry), one entry array (the value, and where its
/// key is) and one byte arena holding every key back to back, each after its 2-byte length.
/// A lookup is a slot, then the key's bytes and the entry, which are loaded independently
/// (their misses overlap); a map with payloads can be read without the entry at all
/// (`withPayload`: the member check path). The storage is reached through raw pointers held
/// in `let` properties, so reading it makes no retain and no exclusivity check.
///
/// Memory (a million members is ~2M entries): an entry is its value and 6 bytes (often in
/// the value's padding), a slot 8, and 2 bytes of key length in the arena.
/// Entries do not keep their hash: a copy that keeps the slot count copies the slots as
/// they are, and only growing the slots or removing an entry hashes keys again. A map made
/// with `payloads` stores bytes of the value after each key (an email, the org and user of
/// an api key), so values need no `String`s of their own, each a heap object.
struct ByteMap<Value: Sendable>: Sendable {
    static var separator: UInt8 { 0x1F }

    private var shards: [ByteMapShard<Value>]
    /// Where each shard's storage is, side by side (32 bytes a shard), so a lookup goes
    /// straight from the shard number to the slots without loading the shard object.
    /// Updated wherever `shards` is.
    private var heads: [ByteMapHead<Value>]
    private let shardShift: UInt64
    private(set) var count = 0

    /// Whether each entry carries a payload after its key (see `upsert(_:_:payload:)`). Kept
    /// by the shards only: `CompiledPolicy` holds four maps and the check path copies it, so
    /// a map stays 32 bytes.
    var payloads: Bool { shards[0].payloads }

    /// The shards, for `storageStats`.
    var shardsForStats: [ByteMapShard<Value>] { shards }

    /// `shardBits` sets 2^shardBits shards; pick it for the largest expected size so that
    /// shards stay around a few hundred entries (at most 12: the slot tag is hash bits 40-51,
    /// the shard number the top bits).
    init(shardBits: Int, payloads: Bool = false) {
        precondition(shardBits >= 0 && shardBits <= 12, "at most 2^12 shards")
        let empty = ByteMapShard<Value>(entryCapacity: 0, arenaCapacity: 0, payloads: payloads)
        shards = Array(repeating: empty, count: 1 << shardBits)
        heads = Array(repeating: empty.head, count: 1 << shardBits)
        shardShift = UInt64(64 - shardBits)
    }

    @inline(__always)
    private func shardIndex(_ hash: UInt64) -> Int { Int(truncatingIfNeeded: hash >> shardShift) }

    /// Sizes every shard for `total` entries spread evenly, whose keys and payloads take
    /// `arenaBytes` in all, so that building a large map rebuilds few tables. Shards already
    /// holding entries keep them.
    ///
    /// Entries per shard are ~Poisson: room for the mean and 1.5 standard deviations leaves
    /// ~7% of the shards to grow once (by a quarter) near the end of a build, where the mean
    /// and four deviations left ~25% of a million members' storage unused.
    mutating func reserve(_ total: Int, arenaBytes: Int) {
        let n = shards.count
        let mean = Double(total) / Double(n)
        let perShard = Int(mean + 1.5 * mean.squareRoot()) + 2
        let perEntry = Double(arenaBytes) / Double(max(total, 1)) + 2 + (payloads ? 4 : 0)
        let bytes = Int(perEntry * Double(perShard)) + 16
        for s in 0..<n where shards[s].count == 0 {
            shards[s] = ByteMapShard(entryCapacity: perShard, arenaCapacity: bytes, payloads: payloads)
            heads[s] = shards[s].head
        }
    }

    /// Sizes every shard to what it holds, one shard at a time (each old one is freed as its
    /// copy replaces it), for a map built from estimated sizes: `reserve(_:arenaBytes:)`
    /// leaves each shard room for 1.5 standard deviations more, ~10-30% of a large map.
    mutating func shrinkToFit() {
        for s in shards.indices where shards[s].hasUnusedRoom {
            // A shard no other snapshot holds gives its entries up (no retain and release of
            // each value's references). Asked first: as the receiver of `fitted`, the shard
            // would be retained before its argument is evaluated.
            let unique = isKnownUniquelyReferenced(&shards[s])
            shards[s] = shards[s].fitted(moving: unique)
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
    /// `key` is an id (no separator); a composite key is looked up by its parts.
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

    /// Runs `body` on the value under `key` and its payload (a map made with `payloads`).
    @inline(__always)
    func withEntry<R>(_ key: UnsafeRawBufferPointer, _ body: (borrowing Value, UnsafeRawBufferPointer) -> R) -> R? {
        let h = ByteHash.hash(key)
        let shard = heads[shardIndex(h)]
        guard let e = shard.find(h, { ByteHash.equal($0, key) }) else { return nil }
        return body(shard.entries[e].value, shard.payload(e))
    }

    /// Runs `body` on the payload under the composite key `a` + `b` (a map made with
    /// `payloads`), reading only the slot and the key's bytes, which the payload follows: no
    /// entry. The check path reads a member's facts this way.
    @inline(__always)
    func withPayload<R>(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> R) -> R? {
        let h = ByteHash.hash(a, b)
        let shard = heads[shardIndex(h)]
        guard let slot = shard.findSlot(h, { ByteHash.equal($0, a, b) }) else { return nil }
        return body(shard.payload(slot: slot))
    }

    /// Whether `key` is present, without copying its value.
    @inline(__always)
    func contains(_ key: UnsafeRawBufferPointer) -> Bool {
        withValue(key) { _ in true } ?? false
    }

    // MARK: Lookup and update by String (building)

    /// A stored key's hash: a composite key (one with the separator, which ids may not
    /// contain) hashes as its two parts, as `find(_:_:)` hashes them. Every key a map stores
    /// must hash the same way here as where it was inserted: slots are rebuilt from it.
    @inline(__always)
    static func hash(bytes b: UnsafeRawBufferPointer) -> UInt64 { ByteHash.stored(b) }

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

    /// Runs `body` on the value and payload under the stored key `key` (any bytes: hashed as
    /// `hash(bytes:)` hashes them, as `upsert(bytes:_:)` does).
    func withStored<R>(_ key: UnsafeRawBufferPointer, _ body: (borrowing Value, UnsafeRawBufferPointer) -> R) -> R? {
        let h = Self.hash(bytes: key)
        let shard = heads[shardIndex(h)]
        guard let e = shard.find(h, { bytesEqual($0, key) }) else { return nil }
        return body(shard.entries[e].value, shard.payload(e))
    }

    /// The shard `s`, copied first if another snapshot shares it, with room for `blobLength`
    /// more arena bytes and, if `entry`, one more entry (an update needs neither: a fitted
    /// shard, full, must not grow for it).
    @inline(__always)
    private mutating func uniqueShard(_ s: Int, adding blobLength: Int, entry: Bool) -> ByteMapShard<Value> {
        if !isKnownUniquelyReferenced(&shards[s]) {
            shards[s] = shards[s].copy(adding: blobLength, entry: entry, shared: true)
            heads[s] = shards[s].head
        } else if !shards[s].hasRoom(blobLength, entry: entry) {
            shards[s] = shards[s].copy(adding: blobLength, entry: entry, shared: false)
            heads[s] = shards[s].head
        }
        return shards[s]
    }

    /// Inserts or replaces the value under the key whose bytes `write` produces (the key at
    /// its first pointer, the payload at its second); returns the previous value.
    @inline(__always)
    private mutating func upsert(hash h: UInt64, keyLength: Int, payloadLength: Int,
                                 matches: (UnsafeRawBufferPointer) -> Bool,
                                 write: (UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> Void, _ value: Value) -> Value? {
        let s = shardIndex(h)
        let payloads = shards[s].payloads
        let blob = 2 + keyLength + (payloads ? 4 + payloadLength : 0)
        // A copy keeps every entry at its index.
        if let e = shards[s].find(h, matches) {
            // A new payload goes at the end of the arena (the old bytes are dropped at the
            // next copy); without one the key stays where it is.
            let shard = uniqueShard(s, adding: payloads ? blob : 0, entry: false)
            if payloads {
                // The slot, in this (maybe copied) shard, points at the key's new place too.
                shard.rewrite(e, slot: shard.findSlot(h, matches)!, keyLength: keyLength, payloadLength: payloadLength, write: write)
            }
            return shard.replaceValue(e, value)
        }
        let shard = uniqueShard(s, adding: blob, entry: true)
        shard.insert(hash: h, keyLength: keyLength, payloadLength: payloadLength, write: write, value)
        count += 1
        return nil
    }

    /// Inserts or replaces; returns the previous value.
    @discardableResult
    mutating func upsert(_ key: String, _ value: Value) -> Value? {
        withBytes(key) { k in upsert(bytes: k, value) }
    }

    /// Inserts or replaces under the stored key `k` (hashed by `hash(bytes:)`).
    @discardableResult
    mutating func upsert(bytes k: UnsafeRawBufferPointer, _ value: Value) -> Value? {
        upsert(hash: Self.hash(bytes: k), keyLength: k.count, payloadLength: 0, matches: { bytesEqual($0, k) },
               write: { p, _ in if k.count > 0 { p.copyMemory(from: k.baseAddress!, byteCount: k.count) } }, value)
    }

    /// Inserts or replaces `value` under `key`, with `a`, `b` and `c` back to back as its
    /// payload (a map made with `payloads`); returns the previous value.
    @discardableResult
    mutating func upsert(_ key: String, _ value: Value, payload a: String, _ b: String = "", _ c: String = "") -> Value? {
        precondition(payloads)
        return withBytes(key) { k in
            withBytes(a) { a in
                withBytes(b) { b in
                    withBytes(c) { c in
                        upsert(hash: Self.hash(bytes: k), keyLength: k.count, payloadLength: a.count + b.count + c.count,
                               matches: { bytesEqual($0, k) },
                               write: { p, q in
                                   if k.count > 0 { p.copyMemory(from: k.baseAddress!, byteCount: k.count) }
                                   if a.count > 0 { q.copyMemory(from: a.baseAddress!, byteCount: a.count) }
                                   if b.count > 0 { (q + a.count).copyMemory(from: b.baseAddress!, byteCount: b.count) }
                                   if c.count > 0 { (q + a.count + b.count).copyMemory(from: c.baseAddress!, byteCount: c.count) }
                               }, value)
                    }
                }
            }
        }
    }

    /// Inserts or replaces the value under the composite key `a` + `b`, without joining them
    /// into a `String`; returns the previous value.
    @discardableResult
    mutating func upsert(_ a: String, _ b: String, _ value: Value) -> Value? {
        // A map with payloads is read by `withPayload` without its entries: every key needs
        // its payload (`upsert(_:_:_:payloadLength:writePayload:)`).
        precondition(!payloads, "a composite key of a map with payloads needs its payload")
        return withBytes(a) { a in
            withBytes(b) { b in
                upsert(hash: ByteHash.hash(a, b), keyLength: a.count + 1 + b.count, payloadLength: 0,
                       matches: { ByteHash.equal($0, a, b) },
                       write: { p, _ in
                           if a.count > 0 { p.copyMemory(from: a.baseAddress!, byteCount: a.count) }
                           p.storeBytes(of: Self.separator, toByteOffset: a.count, as: UInt8.self)
                           if b.count > 0 { (p + a.count + 1).copyMemory(from: b.baseAddress!, byteCount: b.count) }
                       }, value)
            }
        }
    }

    /// Inserts or replaces `value` under the composite key `a` + `b`, with `payloadLength`
    /// bytes of payload that `writePayload` writes (a map made with `payloads`); returns the
    /// previous value.
    @discardableResult
    mutating func upsert(_ a: String, _ b: String, _ value: Value, payloadLength: Int,
                         writePayload: (UnsafeMutableRawPointer) -> Void) -> Value? {
        precondition(payloads)
        return withBytes(a) { a in
            withBytes(b) { b in
                upsert(hash: ByteHash.hash(a, b), keyLength: a.count + 1 + b.count, payloadLength: payloadLength,
                       matches: { ByteHash.equal($0, a, b) },
                       write: { p, q in
                           if a.count > 0 { p.copyMemory(from: a.baseAddress!, byteCount: a.count) }
                           p.storeBytes(of: Self.separator, toByteOffset: a.count, as: UInt8.self)
                           if b.count > 0 { (p + a.count + 1).copyMemory(from: b.baseAddress!, byteCount: b.count) }
                           writePayload(q)
                       }, value)
            }
        }
    }

    /// Changes the value under `key` in place, if there is one.
    mutating func update(_ key: String, _ body: (inout Value) -> Void) {
        withBytes(key) { k in update(bytes: k, body) }
    }

    /// Changes the value under the stored key `k` in place, if there is one.
    mutating func update(bytes k: UnsafeRawBufferPointer, _ body: (inout Value) -> Void) {
        update(hash: Self.hash(bytes: k), matches: { bytesEqual($0, k) }, body)
    }

    /// Changes the value under the composite key `a` + `b` in place, if there is one.
    mutating func update(_ a: String, _ b: String, _ body: (inout Value) -> Void) {
        withBytes(a) { a in withBytes(b) { b in update(a, b, body) } }
    }

    /// Changes the value under the composite key `a` + `b` (bytes) in place, if there is one.
    mutating func update(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, _ body: (inout Value) -> Void) {
        update(hash: ByteHash.hash(a, b), matches: { ByteHash.equal($0, a, b) }, body)
    }

    @inline(__always)
    private mutating func update(hash h: UInt64, matches: (UnsafeRawBufferPointer) -> Bool, _ body: (inout Value) -> Void) {
        let s = shardIndex(h)
        guard let e = shards[s].find(h, matches) else { return }
        // A copy keeps every entry at its index.
        let shard = uniqueShard(s, adding: 0, entry: false)
        body(&shard.entries[e].value)
    }

    @inline(__always)
    private mutating func remove(hash h: UInt64, matches: (UnsafeRawBufferPointer) -> Bool) -> Value? {
        let s = shardIndex(h)
        guard shards[s].find(h, matches) != nil else { return nil }
        let shard = uniqueShard(s, adding: 0, entry: false)
        count -= 1
        return shard.remove(slot: shard.findSlot(h, matches)!)
    }

    /// Removes; returns the removed value.
    @discardableResult
    mutating func remove(_ key: String) -> Value? {
        withBytes(key) { k in remove(bytes: k) }
    }

    /// Removes the stored key `k`; returns the removed value.
    @discardableResult
    mutating func remove(bytes k: UnsafeRawBufferPointer) -> Value? {
        remove(hash: Self.hash(bytes: k), matches: { bytesEqual($0, k) })
    }

    /// Removes the composite key `a` + `b`; returns the removed value.
    @discardableResult
    mutating func remove(_ a: String, _ b: String) -> Value? {
        withBytes(a) { a in withBytes(b) { b in remove(hash: ByteHash.hash(a, b), matches: { ByteHash.equal($0, a, b) }) } }
    }

    /// Removes every entry for which `shouldRemove` (given the key's bytes, the value and
    /// the payload) is true; returns the removed entries.
    mutating func removeAll(where shouldRemove: (UnsafeRawBufferPointer, borrowing Value, UnsafeRawBufferPointer) -> Bool) -> [(String, Value)] {
        var removed: [(String, Value)] = []
        for s in shards.indices {
            let shard = shards[s]
            guard (0..<shard.count).contains(where: { shouldRemove(shard.key(at: $0), shard.entries[$0].value, shard.payload($0)) }) else {
                continue
            }
            let unique = uniqueShard(s, adding: 0, entry: false)
            var e = 0
            while e < unique.count {
                let k = unique.key(at: e)
                if shouldRemove(k, unique.entries[e].value, unique.payload(e)) {
                    let name = String(decoding: k, as: UTF8.self)
                    removed.append((name, unique.remove(slot: unique.slot(of: e))))
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

    /// Every entry's key bytes, value and payload, in no particular order, without making
    /// `String`s.
    func forEachBytes(_ body: (UnsafeRawBufferPointer, borrowing Value, UnsafeRawBufferPointer) throws -> Void) rethrows {
        for shard in shards {
            for e in 0..<shard.count { try body(shard.key(at: e), shard.entries[e].value, shard.payload(e)) }
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

    /// Splits composite key bytes into their two parts.
    static func parts(_ k: UnsafeRawBufferPointer) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer) {
        let i = k.firstIndex(of: separator) ?? k.count
        return (UnsafeRawBufferPointer(rebasing: k[..<i]), UnsafeRawBufferPointer(rebasing: k[min(i + 1, k.count)...]))
    }
}

/// Where one shard's storage is: what a lookup reads, trivially copied.
struct ByteMapHead<Value>: @unchecked Sendable {
    let slots: UnsafeMutablePointer<UInt64>
    let slotMask: Int
    let entries: UnsafeMutablePointer<ByteMapEntry<Value>>
    let arena: UnsafeMutablePointer<UInt8>

    /// The slot of the key that `matches`, with `hash` its `ByteHash`. A probe reads the slot,
    /// then the key's bytes where the slot says they are (their length just before them):
    /// not the entry, which a caller that wants the value then reads (a load independent of
    /// the key's, so the two misses overlap).
    @inline(__always)
    func findSlot(_ hash: UInt64, _ matches: (UnsafeRawBufferPointer) -> Bool) -> UInt64? {
        probe(hash, matches)?.slot
    }

    /// Where the key that `matches` is in `slots`, and that slot (see `findSlot`).
    @inline(__always)
    func probe(_ hash: UInt64, _ matches: (UnsafeRawBufferPointer) -> Bool) -> (index: Int, slot: UInt64)? {
        let tag = ByteMapShard<Value>.tag(hash)
        var i = Int(truncatingIfNeeded: hash) & slotMask
        while true {
            let slot = slots[i]
            if slot == 0 { return nil }
            if ByteMapShard<Value>.tag(ofSlot: slot) == tag {
                let key = UnsafeRawPointer(arena + ByteMapShard<Value>.keyOffset(slot))
                let length = Int((key - 2).loadUnaligned(as: UInt16.self))
                if matches(UnsafeRawBufferPointer(start: key, count: length)) { return (i, slot) }
            }
            i = (i &+ 1) & slotMask
        }
    }

    /// The entry holding the key that `matches`, with `hash` its `ByteHash`.
    @inline(__always)
    func find(_ hash: UInt64, _ matches: (UnsafeRawBufferPointer) -> Bool) -> Int? {
        guard let slot = findSlot(hash, matches) else { return nil }
        return ByteMapShard<Value>.entryIndex(slot)
    }

    /// The payload after the key that `slot` points at (a map made with `payloads`).
    @inline(__always)
    func payload(slot: UInt64) -> UnsafeRawBufferPointer {
        let key = UnsafeRawPointer(arena + ByteMapShard<Value>.keyOffset(slot))
        let p = key + Int((key - 2).loadUnaligned(as: UInt16.self))
        return UnsafeRawBufferPointer(start: p + 4, count: Int(p.loadUnaligned(as: UInt32.self)))
    }

    /// The payload of entry `e`: the bytes after its key and their 4-byte length.
    @inline(__always)
    func payload(_ e: Int) -> UnsafeRawBufferPointer {
        let p = UnsafeRawPointer(arena + Int(entries[e].offset) + Int(entries[e].length))
        return UnsafeRawBufferPointer(start: p + 4, count: Int(p.loadUnaligned(as: UInt32.self)))
    }
}

/// One entry of a shard: the value, and where its key's bytes sit in the arena (the
/// payload, if any, follows them). No hash: the slot pointing here holds what a probe needs.
/// The value comes first and the key length is 16 bits (keys are ids, at most 1,025 bytes
/// joined), so the two fit in the value's tail padding when it has some: a member entry (a
/// pointer and a role) is 16 bytes, not 24.
struct ByteMapEntry<Value> {
    var value: Value
    var length: UInt16
    var offset: UInt32
}

/// The storage of one shard. Its capacities are fixed: growing makes a new shard (`copy`).
/// Only a uniquely referenced shard is ever changed, so a snapshot that shares it never sees
/// a change. A copy keeps every entry at its index (lookups by index stay valid).
final class ByteMapShard<Value>: @unchecked Sendable {
    /// 0 for an empty slot, else the arena offset of the entry's key in the high 32 bits and,
    /// in the low 32, tag | (entry index + 1): the tag is hash bits 40-51 (which neither the
    /// shard number nor the slot position uses) in the top 12 bits, the index the low 20, so a
    /// shard holds at most 2^20 - 2 entries (2^32 for a map of 4,096 shards). With the key's
    /// offset in the slot, a probe goes from the slot to the key without reading the entry.
    let slots: UnsafeMutablePointer<UInt64>
    let slotMask: Int
    let entries: UnsafeMutablePointer<ByteMapEntry<Value>>
    let entryCapacity: Int
    let arena: UnsafeMutablePointer<UInt8>
    let arenaCapacity: Int
    /// Whether each key is followed by a 4-byte length and that many bytes of payload.
    let payloads: Bool
    private(set) var count = 0
    private(set) var arenaUsed = 0

    static var tagMask: UInt32 { 0xFFF0_0000 }
    static var indexMask: UInt32 { 0x000F_FFFF }
    static var maxEntries: Int { Int(indexMask) - 1 }

    @inline(__always)
    static func tag(ofSlot slot: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: slot) & tagMask }
    @inline(__always)
    static func entryIndex(_ slot: UInt64) -> Int { Int(truncatingIfNeeded: UInt32(truncatingIfNeeded: slot) & indexMask) &- 1 }
    @inline(__always)
    static func keyOffset(_ slot: UInt64) -> Int { Int(truncatingIfNeeded: slot >> 32) }
    @inline(__always)
    static func slot(tag: UInt32, entry e: Int, keyOffset: UInt32) -> UInt64 { UInt64(keyOffset) << 32 | UInt64(tag | UInt32(e + 1)) }
    /// `slot` pointing at the key's new offset.
    @inline(__always)
    static func slot(_ slot: UInt64, keyOffset: UInt32) -> UInt64 { slot & 0xFFFF_FFFF | UInt64(keyOffset) << 32 }

    /// Room for `entryCapacity` entries, with at least 1.75 times as many slots (a power of
    /// two): a full shard is at most 57% loaded, and a shard reserved for 269 entries (a
    /// million members in 4,096 shards) has 512 slots, not 1,024 (16 MB less at 1M members).
    init(entryCapacity: Int, arenaCapacity: Int, payloads: Bool) {
        precondition(entryCapacity <= Self.maxEntries, "a shard holds at most \(Self.maxEntries) entries")
        var slotCount = 1
        while slotCount * 4 < entryCapacity * 7 { slotCount *= 2 }
        slots = .allocate(capacity: slotCount)
        slots.initialize(repeating: 0, count: slotCount)
        slotMask = slotCount - 1
        self.entryCapacity = entryCapacity
        entries = .allocate(capacity: max(entryCapacity, 1))
        self.arenaCapacity = arenaCapacity
        arena = .allocate(capacity: max(arenaCapacity, 1))
        self.payloads = payloads
    }

    deinit {
        entries.deinitialize(count: count)
        entries.deallocate()
        slots.deallocate()
        arena.deallocate()
    }

    @inline(__always)
    static func tag(_ hash: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: hash >> 20) & tagMask }

    @inline(__always)
    func key(at e: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: arena + Int(entries[e].offset), count: Int(entries[e].length))
    }

    /// The payload of entry `e` (empty in a map without payloads).
    @inline(__always)
    func payload(_ e: Int) -> UnsafeRawBufferPointer {
        payloads ? head.payload(e) : UnsafeRawBufferPointer(start: nil, count: 0)
    }

    /// The arena bytes entry `e` takes: its key, and its payload with the payload's length.
    private func blobLength(_ e: Int) -> Int {
        2 + Int(entries[e].length) + (payloads ? 4 + payload(e).count : 0)
    }

    var head: ByteMapHead<Value> { ByteMapHead(slots: slots, slotMask: slotMask, entries: entries, arena: arena) }

    @inline(__always)
    func find(_ hash: UInt64, _ matches: (UnsafeRawBufferPointer) -> Bool) -> Int? {
        head.find(hash, matches)
    }

    /// The slot pointing at the entry whose key `matches`.
    func findSlot(_ hash: UInt64, _ matches: (UnsafeRawBufferPointer) -> Bool) -> Int? {
        head.probe(hash, matches)?.index
    }

    /// The slot pointing at entry `e` (which exists), found from its key's hash.
    func slot(of e: Int) -> Int {
        var i = Int(truncatingIfNeeded: ByteHash.stored(key(at: e))) & slotMask
        while Self.entryIndex(slots[i]) != e { i = (i + 1) & slotMask }
        return i
    }

    private func place(_ hash: UInt64, entry e: Int) {
        var i = Int(truncatingIfNeeded: hash) & slotMask
        while slots[i] != 0 { i = (i + 1) & slotMask }
        slots[i] = Self.slot(tag: Self.tag(hash), entry: e, keyOffset: entries[e].offset)
    }

    func hasRoom(_ blobLength: Int, entry: Bool) -> Bool {
        (!entry || count < entryCapacity) && arenaUsed + blobLength <= arenaCapacity
    }

    /// Writes a blob (the key's 2-byte length, the key, then the payload's length and bytes
    /// in a map with payloads) at the end of the arena; returns the key's offset.
    private func append(keyLength: Int, payloadLength: Int, write: (UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> Void) -> UInt32 {
        let start = UnsafeMutableRawPointer(arena + arenaUsed)
        start.storeBytes(of: UInt16(keyLength), as: UInt16.self)
        let p = start + 2
        if payloads {
            (p + keyLength).storeBytes(of: UInt32(payloadLength), as: UInt32.self)
            write(p, p + keyLength + 4)
            arenaUsed += 2 + keyLength + 4 + payloadLength
        } else {
            write(p, p + keyLength)
            arenaUsed += 2 + keyLength
        }
        return UInt32(p - UnsafeMutableRawPointer(arena))
    }

    /// Appends an entry (the caller checked `hasRoom`); `write` fills the key's bytes and
    /// the payload's.
    func insert(hash: UInt64, keyLength: Int, payloadLength: Int,
                write: (UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> Void, _ value: Value) {
        precondition(keyLength <= Int(UInt16.max), "a key of \(keyLength) bytes (at most 65,535)")
        let offset = append(keyLength: keyLength, payloadLength: payloadLength, write: write)
        (entries + count).initialize(to: ByteMapEntry(value: value, length: UInt16(keyLength), offset: offset))
        place(hash, entry: count)
        count += 1
    }

    /// Writes entry `e`'s key and a new payload at the end of the arena (the caller checked
    /// `hasRoom`), and points its slot `i` there; the old bytes stay until the next copy.
    func rewrite(_ e: Int, slot i: Int, keyLength: Int, payloadLength: Int, write: (UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> Void) {
        precondition(Self.entryIndex(slots[i]) == e)
        let offset = append(keyLength: keyLength, payloadLength: payloadLength, write: write)
        entries[e].offset = offset
        slots[i] = Self.slot(slots[i], keyOffset: offset)
    }

    func replaceValue(_ e: Int, _ value: Value) -> Value {
        let old = entries[e].value
        entries[e].value = value
        return old
    }

    /// Removes the entry slot `i` points at: the slot by backward shift (so no tombstones),
    /// the last entry moved into its place. Its bytes stay in the arena until the next copy.
    func remove(slot i0: Int) -> Value {
        let e = Self.entryIndex(slots[i0])
        var i = i0
        slots[i] = 0
        var j = i
        while true {
            j = (j + 1) & slotMask
            let s = slots[j]
            if s == 0 { break }
            let home = Int(truncatingIfNeeded: ByteHash.stored(key(at: Self.entryIndex(s)))) & slotMask
            // The entry at j may move back to i unless its home lies cyclically in (i, j].
            if (j - home) & slotMask >= (j - i) & slotMask {
                slots[i] = s
                slots[j] = 0
                i = j
            }
        }
        let last = count - 1
        if e != last {
            let ls = slot(of: last)
            let old = (entries + e).move()
            (entries + e).moveInitialize(from: entries + last, count: 1)
            // Its tag and key offset stay (its bytes do not move), its index changes.
            slots[ls] = slots[ls] & ~UInt64(Self.indexMask) | UInt64(e + 1)
            count -= 1
            return old.value
        }
        count -= 1
        return (entries + e).move().value
    }

    /// A capacity with room to grow. A shard being filled in place (a build) doubles while
    /// small, so a map built without `reserve` copies each entry a few times only, then grows
    /// by a quarter (a reserved shard that overflows needs little more). A copy of a shard another snapshot shares (an `applying`) grows by an
    /// eighth: the next snapshot copies the shards it touches anyway, so room kept for later
    /// would only sit unused.
    static func grown(_ needed: Int, minimum: Int, shared: Bool) -> Int {
        if shared { return needed + max(needed / 8, minimum) }
        return needed < 64 ? max(minimum, needed * 2) : needed + needed / 4
    }

    /// A copy with room for `blobLength` more arena bytes and, if `entry`, one more entry
    /// (grown when full, see `grown`), each entry at the same index; the arena is compacted.
    func copy(adding blobLength: Int, entry: Bool, shared: Bool) -> ByteMapShard<Value> {
        var live = 0
        for e in 0..<count { live += self.blobLength(e) }
        var entryCapacity = self.entryCapacity
        if entry && count + 1 > entryCapacity { entryCapacity = min(Self.grown(count + 1, minimum: 4, shared: shared), Self.maxEntries) }
        var arenaCapacity = self.arenaCapacity
        if live + blobLength > arenaCapacity { arenaCapacity = Self.grown(live + blobLength, minimum: 64, shared: shared) }
        return copy(entryCapacity: entryCapacity, arenaCapacity: arenaCapacity, live: live)
    }

    /// Whether it holds room it does not use (see `ByteMap.shrinkToFit`).
    var hasUnusedRoom: Bool { count < entryCapacity || arenaUsed < arenaCapacity }

    /// A copy with room for its entries only. `moving` (for a shard no one else holds) moves
    /// the entries out, leaving this shard empty.
    func fitted(moving: Bool) -> ByteMapShard<Value> {
        var live = 0
        for e in 0..<count { live += blobLength(e) }
        return copy(entryCapacity: count, arenaCapacity: live, live: live, moving: moving)
    }

    /// A copy with these capacities (at least `count` and `live`, the bytes of the entries);
    /// `moving` moves the entries out instead, leaving this shard empty.
    private func copy(entryCapacity: Int, arenaCapacity: Int, live: Int, moving: Bool = false) -> ByteMapShard<Value> {
        let next = ByteMapShard(entryCapacity: entryCapacity, arenaCapacity: arenaCapacity, payloads: payloads)
        let count = self.count
        if moving {
            next.entries.moveInitialize(from: entries, count: count)
            self.count = 0
        } else {
            next.entries.initialize(from: entries, count: count)
        }
        next.count = count
        if live == arenaUsed {
            // Nothing removed or rewritten since: the arena and the offsets copy as they are.
            next.arena.update(from: arena, count: arenaUsed)
            next.arenaUsed = arenaUsed
        } else {
            // Compacted: each entry's bytes, read here at its old offset, go to the next free
            // place of the copy. Only the copy's entries change (this shard may be shared).
            var used = 0
            for e in 0..<count {
                let old = Int(next.entries[e].offset), length = Int(next.entries[e].length)
                var n = 2 + length
                if payloads { n += 4 + Int(UnsafeRawPointer(arena + old + length).loadUnaligned(as: UInt32.self)) }
                (next.arena + used).update(from: arena + old - 2, count: n)
                next.entries[e].offset = UInt32(used + 2)
                used += n
            }
            next.arenaUsed = used
        }
        if next.slotMask == slotMask {
            next.slots.update(from: slots, count: slotMask + 1)
            if next.arenaUsed != arenaUsed {
                // Compacted: each slot points at its key's new offset.
                for i in 0...slotMask where next.slots[i] != 0 {
                    next.slots[i] = Self.slot(next.slots[i], keyOffset: next.entries[Self.entryIndex(next.slots[i])].offset)
                }
            }
        } else {
            for e in 0..<count { next.place(ByteHash.stored(next.key(at: e)), entry: e) }
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

    /// The hash of a key as a map stores it: a composite key (with the separator, which ids
    /// may not contain) hashes as its two parts, as a lookup by parts does.
    @inline(__always)
    static func stored(_ b: UnsafeRawBufferPointer) -> UInt64 {
        let i = separatorIndex(b)
        if i == b.count { return hash(b) }
        return hash(UnsafeRawBufferPointer(rebasing: b[..<i]), UnsafeRawBufferPointer(rebasing: b[(i + 1)...]))
    }

    /// Where the first separator (0x1F) of `b` is, or `b.count`: eight bytes at a time (a
    /// member key's is 37 bytes in; rebuilding slots hashes every key of a shard).
    @inline(__always)
    static func separatorIndex(_ b: UnsafeRawBufferPointer) -> Int {
        guard let p = b.baseAddress else { return 0 }
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        var i = 0
        while i + 8 <= b.count {
            // A zero byte of x is a separator byte of the word (Bit Twiddling Hacks); the
            // lowest flagged byte is exact (false flags only follow a true one).
            let x = p.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ (ones &* 0x1F)
            let found = (x &- ones) & ~x & highs
            if found != 0 { return i + UInt64(littleEndian: found).trailingZeroBitCount / 8 }
            i += 8
        }
        while i < b.count && p.load(fromByteOffset: i, as: UInt8.self) != 0x1F { i += 1 }
        return i
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
        // No bounds-checked slicing: the count test covers every byte read.
        guard stored.count == a.count &+ 1 &+ b.count, let p = stored.baseAddress,
              p.load(fromByteOffset: a.count, as: UInt8.self) == 0x1F else { return false }
        return bytesEqual(UnsafeRawBufferPointer(start: p, count: a.count), a)
            && bytesEqual(UnsafeRawBufferPointer(start: p + a.count + 1, count: b.count), b)
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

/// Byte equality, a word at a time; the last word overlaps the one before it when the length
/// is not a multiple of 8, and shorter strings compare as two overlapping 4-byte words (or
/// their first, middle and last bytes), so there is no loop over the tail bytes.
@inline(__always)
func bytesEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    let n = a.count
    guard n == b.count else { return false }
    guard n > 0, let p = a.baseAddress, let q = b.baseAddress else { return true }
    if n >= 8 {
        var i = 0
        while i + 8 < n {
            if p.loadUnaligned(fromByteOffset: i, as: UInt64.self) != q.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
            i += 8
        }
        return p.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self) == q.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self)
    }
    if n >= 4 {
        return p.loadUnaligned(as: UInt32.self) == q.loadUnaligned(as: UInt32.self)
            && p.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self) == q.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self)
    }
    return p.load(as: UInt8.self) == q.load(as: UInt8.self)
        && p.load(fromByteOffset: n >> 1, as: UInt8.self) == q.load(fromByteOffset: n >> 1, as: UInt8.self)
        && p.load(fromByteOffset: n - 1, as: UInt8.self) == q.load(fromByteOffset: n - 1, as: UInt8.self)
}

@inline(__always)
func bytesEqual(_ a: UnsafeRawBufferPointer, _ b: StaticString) -> Bool {
    guard a.count == b.utf8CodeUnitCount else { return false }
    let p = b.utf8Start
    for i in 0..<a.count where a[i] != p[i] { return false }
    return true
}
