/// The members whose org id and user id are both UUIDs in canonical lowercase text
/// (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits `0-9a-f`), keyed by the two UUIDs in
/// binary: the part of `MemberTable` that holds the ids most members have, so that a check
/// reads one 48-byte record (org, user, assignment list, owner) probed directly. A `ByteMap`
/// reads a slot and then the 88-byte key-and-payload blob it points at: two dependent
/// accesses over ~3.4 cache lines, and 73 bytes of text hashed and compared.
///
/// Sharded like `ByteMap` (4,096 shards, copy-on-write each), so an apply copies only the
/// shards it touches. A shard is an open-addressing table of records with linear probing and
/// backward-shift deletion (no tombstones); its capacity is any number (the home slot is the
/// hash scaled to it), so a shard is sized to its count and not to a power of two.
struct MemberIndex: Sendable {
    /// A member's key: the org's and the user's UUIDs in binary (`UUIDText.key`).
    struct Key: Equatable {
        var org0, org1, user0, user1: UInt64
    }

    private var shards: [MemberIndexShard]
    /// Where each shard's records are, side by side (16 bytes a shard), so a lookup goes
    /// from the shard number to the record without loading the shard object.
    private var heads: [MemberIndexHead]
    private(set) var count = 0

    static var shardBits: Int { 12 }

    init() {
        let empty = MemberIndexShard(capacity: 0)
        shards = Array(repeating: empty, count: 1 << Self.shardBits)
        heads = Array(repeating: empty.head, count: 1 << Self.shardBits)
    }

    /// Each key word folded into the state in turn (a 128-bit product with a constant, its
    /// halves xored), so no word can cancel the others: with the product of two words (as
    /// wyhash mixes a pair), an org whose first word was the constant it is xored with made
    /// the product 0 whatever its second word, and 2^64 such orgs hashed alike (found by review).
    @inline(__always)
    static func hash(_ k: Key) -> UInt64 {
        @inline(__always) func fold(_ x: UInt64, _ c: UInt64) -> UInt64 {
            let p = x.multipliedFullWidth(by: c)
            return p.high ^ p.low
        }
        var h = fold(k.org0 ^ 0xA076_1D64_78BD_642F, 0xE703_7ED1_A0B4_28DB)
        h = fold(h ^ k.org1, 0x8EBC_6AF0_9C88_C6E3)
        h = fold(h ^ k.user0, 0x5899_65CC_7537_4CC3)
        return fold(h ^ k.user1, 0x1D8E_4E27_C47D_124F)
    }

    @inline(__always)
    private static func shard(_ h: UInt64) -> Int { Int(truncatingIfNeeded: h >> UInt64(64 - shardBits)) }

    /// The member keyed `k`, or nil.
    @inline(__always)
    func find(_ k: Key) -> Directory.MemberEntry? {
        let h = Self.hash(k)
        guard let r = heads[Self.shard(h)].find(k, h) else { return nil }
        return MemberIndexShard.entry(r)
    }

    /// The shard holding `h`, uniquely referenced and with room for one more record.
    private mutating func uniqueShard(_ s: Int) -> MemberIndexShard {
        let unique = isKnownUniquelyReferenced(&shards[s])
        if !unique || !shards[s].hasRoom {
            let c = shards[s].capacity
            shards[s] = shards[s].copy(capacity: shards[s].hasRoom ? c : MemberIndexShard.grown(c))
            heads[s] = shards[s].head
        }
        return shards[s]
    }

    /// Inserts or replaces the member keyed `k`; returns the previous entry.
    @discardableResult
    mutating func upsert(_ k: Key, _ entry: Directory.MemberEntry) -> Directory.MemberEntry? {
        let h = Self.hash(k)
        let old = uniqueShard(Self.shard(h)).upsert(k, h, entry)
        if old == nil { count += 1 }
        return old
    }

    /// Removes the member keyed `k`; returns its entry, nil if there was none.
    @discardableResult
    mutating func remove(_ k: Key) -> Directory.MemberEntry? {
        let h = Self.hash(k)
        let s = Self.shard(h)
        // Looked up first, so that a miss copies no shard.
        guard heads[s].find(k, h) != nil else { return nil }
        let old = uniqueShard(s).remove(k, h)
        count -= 1
        return old
    }

    /// Removes every member whose key `shouldRemove` accepts; returns them.
    mutating func removeAll(where shouldRemove: (Key) -> Bool) -> [(Key, Directory.MemberEntry)] {
        var removed: [(Key, Directory.MemberEntry)] = []
        for s in shards.indices {
            let keys = shards[s].keys.filter(shouldRemove)
            guard !keys.isEmpty else { continue }
            for k in keys { if let e = remove(k) { removed.append((k, e)) } }
        }
        return removed
    }

    /// Every member, in no particular order.
    func forEach(_ body: (Key, Directory.MemberEntry) throws -> Void) rethrows {
        for shard in shards { try shard.forEach(body) }
    }

    /// Sizes every empty shard for `total` members spread evenly (as `ByteMap.reserve`).
    mutating func reserve(_ total: Int) {
        let mean = Double(total) / Double(shards.count)
        let perShard = Int(mean + 1.5 * mean.squareRoot()) + 2
        for s in shards.indices where shards[s].count == 0 {
            shards[s] = MemberIndexShard(capacity: MemberIndexShard.capacity(for: perShard))
            heads[s] = shards[s].head
        }
    }

    /// Sizes every shard to what it holds (after a build sized from totals).
    mutating func shrinkToFit() {
        for s in shards.indices {
            let count = shards[s].count
            // An empty shard fits in one free record, as the empty shard is (and is kept).
            let fit = count == 0 ? 1 : MemberIndexShard.capacity(for: count)
            guard fit < shards[s].capacity else { continue }
            shards[s] = count == 0 ? MemberIndexShard(capacity: 0) : shards[s].copy(capacity: fit)
            heads[s] = shards[s].head
        }
    }

    /// Bytes of records held (for the memory breakdown); shards shared with other snapshots
    /// are counted whole.
    var recordBytes: Int { shards.reduce(0) { $0 + $1.capacity * MemberIndexShard.stride } }
    var recordCapacity: Int { shards.reduce(0) { $0 + $1.capacity } }
}

/// A shard's records and capacity, for lookups.
struct MemberIndexHead: @unchecked Sendable {
    let records: UnsafeMutableRawPointer
    let capacity: Int

    /// The home slot of hash `h`: its low 32 bits scaled to the capacity.
    @inline(__always)
    static func home(_ h: UInt64, _ capacity: Int) -> Int {
        Int(truncatingIfNeeded: ((h & 0xFFFF_FFFF) &* UInt64(UInt(bitPattern: capacity))) >> 32)
    }

    /// The record keyed `k` (hash `h`), or nil. A shard always has an empty record (a free
    /// one stops the probe; the empty shard is one empty record).
    @inline(__always)
    func find(_ k: MemberIndex.Key, _ h: UInt64) -> UnsafeMutableRawPointer? {
        var i = Self.home(h, capacity)
        while true {
            let r = records + i &* MemberIndexShard.stride
            if r.load(fromByteOffset: MemberIndexShard.listOffset, as: UInt64.self) == 0 { return nil }
            if r.load(as: UInt64.self) == k.org0, r.load(fromByteOffset: 8, as: UInt64.self) == k.org1,
               r.load(fromByteOffset: 16, as: UInt64.self) == k.user0, r.load(fromByteOffset: 24, as: UInt64.self) == k.user1 {
                return r
            }
            i &+= 1
            if i == capacity { i = 0 }
        }
    }
}

/// The records of one shard: `capacity` records of 48 bytes (org, user, list address, owner),
/// 64-byte aligned; a record with list address 0 is free. Only a uniquely referenced shard is
/// changed; its capacity is fixed (growing makes a copy).
final class MemberIndexShard: @unchecked Sendable {
    static var stride: Int { 48 }
    static var listOffset: Int { 32 }
    static var ownerOffset: Int { 40 }

    let records: UnsafeMutableRawPointer
    /// Records; at least one more than `count` can reach (`hasRoom`), so a probe ends.
    let capacity: Int
    private(set) var count = 0

    /// The capacity for `n` records: at most 80% full.
    static func capacity(for n: Int) -> Int { max(n + 1, (n * 5 + 3) / 4) }
    /// The capacity a full shard of `capacity` grows to.
    static func grown(_ capacity: Int) -> Int { max(4, capacity + capacity / 2) }

    /// `capacity` free records (0 makes the empty shard: one free record, no room).
    init(capacity: Int) {
        self.capacity = max(capacity, 1)
        records = .allocate(byteCount: self.capacity * Self.stride, alignment: 64)
        records.initializeMemory(as: UInt8.self, repeating: 0, count: self.capacity * Self.stride)
    }

    deinit { records.deallocate() }

    var head: MemberIndexHead { MemberIndexHead(records: records, capacity: capacity) }

    /// Whether one more record keeps the shard at most 80% full (and one record free).
    var hasRoom: Bool { (count + 1) * 5 <= capacity * 4 && count + 1 < capacity }

    @inline(__always)
    private func record(_ i: Int) -> UnsafeMutableRawPointer { records + i * Self.stride }

    static func entry(_ r: UnsafeMutableRawPointer) -> Directory.MemberEntry {
        let list = UInt(truncatingIfNeeded: r.load(fromByteOffset: listOffset, as: UInt64.self))
        return Directory.MemberEntry(list: Unmanaged.fromOpaque(UnsafeRawPointer(bitPattern: list)!),
                                     role: r.load(fromByteOffset: ownerOffset, as: UInt64.self) == 1 ? .owner : .member)
    }

    @inline(__always)
    private func occupied(_ i: Int) -> Bool { record(i).load(fromByteOffset: Self.listOffset, as: UInt64.self) != 0 }

    /// The keys of the records, in slot order.
    var keys: [MemberIndex.Key] { (0..<capacity).filter(occupied).map { Self.key(record($0)) } }

    func forEach(_ body: (MemberIndex.Key, Directory.MemberEntry) throws -> Void) rethrows {
        for i in 0..<capacity where occupied(i) { try body(Self.key(record(i)), Self.entry(record(i))) }
    }

    private static func key(_ r: UnsafeMutableRawPointer) -> MemberIndex.Key {
        MemberIndex.Key(org0: r.load(as: UInt64.self), org1: r.load(fromByteOffset: 8, as: UInt64.self),
                        user0: r.load(fromByteOffset: 16, as: UInt64.self), user1: r.load(fromByteOffset: 24, as: UInt64.self))
    }

    /// This shard's records in a new one of `capacity` (re-placed when the capacity differs).
    func copy(capacity: Int) -> MemberIndexShard {
        let copy = MemberIndexShard(capacity: capacity)
        if capacity == self.capacity {
            copy.records.copyMemory(from: records, byteCount: capacity * Self.stride)
            copy.count = count
            return copy
        }
        for i in 0..<self.capacity where occupied(i) {
            let k = Self.key(record(i))
            copy.upsert(k, MemberIndex.hash(k), Self.entry(record(i)))
        }
        return copy
    }

    /// Writes the record; returns the entry it replaced, nil for a new one (the caller checked
    /// `hasRoom`).
    @discardableResult
    func upsert(_ k: MemberIndex.Key, _ h: UInt64, _ entry: Directory.MemberEntry) -> Directory.MemberEntry? {
        let list = UInt64(UInt(bitPattern: entry.listAddress))
        let owner = entry.role == .owner
        var r = head.find(k, h)
        let old = r.map(Self.entry)
        if r == nil {
            var i = MemberIndexHead.home(h, capacity)
            while occupied(i) {
                i += 1
                if i == capacity { i = 0 }
            }
            r = record(i)
            count += 1
        }
        let p = r!
        p.storeBytes(of: k.org0, as: UInt64.self)
        p.storeBytes(of: k.org1, toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: k.user0, toByteOffset: 16, as: UInt64.self)
        p.storeBytes(of: k.user1, toByteOffset: 24, as: UInt64.self)
        p.storeBytes(of: list, toByteOffset: Self.listOffset, as: UInt64.self)
        p.storeBytes(of: owner ? 1 : 0, toByteOffset: Self.ownerOffset, as: UInt64.self)
        return old
    }

    /// Removes the record keyed `k`; returns its entry, nil if there was none. Backward-shift
    /// deletion: each record after the hole, up to the next free one, moves into the hole if
    /// the hole lies on its probe path (between its home slot and where it is, cyclically).
    @discardableResult
    func remove(_ k: MemberIndex.Key, _ h: UInt64) -> Directory.MemberEntry? {
        guard let found = head.find(k, h) else { return nil }
        let old = Self.entry(found)
        var hole = (found - records) / Self.stride
        var i = hole
        while true {
            i += 1
            if i == capacity { i = 0 }
            let r = record(i)
            if !occupied(i) { break }
            let home = MemberIndexHead.home(MemberIndex.hash(Self.key(r)), capacity)
            // Distances from home, cyclically: the record may move back to the hole if the
            // hole is no further from its home than it is.
            let distance = (i - home + capacity) % capacity
            let holeDistance = (hole - home + capacity) % capacity
            if holeDistance <= distance {
                record(hole).copyMemory(from: r, byteCount: Self.stride)
                hole = i
            }
        }
        record(hole).initializeMemory(as: UInt8.self, repeating: 0, count: Self.stride)
        count -= 1
        return old
    }
}

/// Canonical UUID text to binary.
enum UUIDText {
    /// The key of `b` if it is a UUID in canonical lowercase text, 36 bytes, else nil: each
    /// hex digit becomes its 4-bit value, digits 0-15 in the low nibbles of one word's bytes
    /// and digits 16-31 in the high nibbles (an order of no meaning, only one to one). Eight
    /// bytes at a time, with no branch but the last.
    @inline(__always)
    static func key(_ b: UnsafeRawBufferPointer) -> (UInt64, UInt64)? {
        guard b.count == 36, let p = b.baseAddress else { return nil }
        let w0 = p.loadUnaligned(as: UInt64.self)
        let w1 = UInt64(p.loadUnaligned(fromByteOffset: 9, as: UInt32.self)) | UInt64(p.loadUnaligned(fromByteOffset: 14, as: UInt32.self)) << 32
        let w2 = UInt64(p.loadUnaligned(fromByteOffset: 19, as: UInt32.self)) | UInt64(p.loadUnaligned(fromByteOffset: 24, as: UInt32.self)) << 32
        let w3 = p.loadUnaligned(fromByteOffset: 28, as: UInt64.self)
        let dashes = (UInt32(p.load(fromByteOffset: 8, as: UInt8.self)) | UInt32(p.load(fromByteOffset: 13, as: UInt8.self)) << 8
            | UInt32(p.load(fromByteOffset: 18, as: UInt8.self)) << 16 | UInt32(p.load(fromByteOffset: 23, as: UInt8.self)) << 24) ^ 0x2D2D_2D2D
        let (v0, bad0) = nibbles(w0), (v1, bad1) = nibbles(w1), (v2, bad2) = nibbles(w2), (v3, bad3) = nibbles(w3)
        guard bad0 | bad1 | bad2 | bad3 | UInt64(dashes) == 0 else { return nil }
        return (v0 | v2 << 4, v1 | v3 << 4)
    }

    /// The values of eight lowercase hex digits, one a byte, and a nonzero `bad` if any byte
    /// is not one. For a byte under 0x80, adding `0x80 - lo` sets its high bit iff it is at
    /// least `lo`, and adding `0x7F - hi` iff it is above `hi`, with no carry into the next
    /// byte; a byte at or over 0x80 is bad by itself (its carries spoil only the masks).
    @inline(__always)
    static func nibbles(_ x: UInt64) -> (value: UInt64, bad: UInt64) {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let high = ones &* 0x80
        let digit = (x &+ ones &* (0x80 - 0x30)) & ~(x &+ ones &* (0x7F - 0x39))
        let letter = (x &+ ones &* (0x80 - 0x61)) & ~(x &+ ones &* (0x7F - 0x66))
        let bad = (~(digit | letter) | x) & high
        let value = (x & (ones &* 0x0F)) &+ ((letter & high) >> 7) &* 9
        return (value, bad)
    }

    /// The canonical text of the UUID `key` made: the inverse of `key(_:)`.
    static func text(_ k: (UInt64, UInt64)) -> String {
        String(unsafeUninitializedCapacity: 36) { out in
            // Digits 0-7, 16-23 in k.0 and 8-15, 24-31 in k.1, low nibbles then high (see `key`).
            func digit(_ i: Int) -> UInt8 {
                let word = (i / 8) % 2 == 0 ? k.0 : k.1
                let v = UInt8(truncatingIfNeeded: word >> UInt64((i % 8) * 8 + (i >= 16 ? 4 : 0))) & 0x0F
                return v < 10 ? 0x30 + v : 0x61 + v - 10
            }
            var d = 0
            for i in 0..<36 {
                if i == 8 || i == 13 || i == 18 || i == 23 { out[i] = 0x2D } else { out[i] = digit(d); d += 1 }
            }
            return 36
        }
    }

    /// The key of a member whose org and user are both canonical UUIDs.
    @inline(__always)
    static func memberKey(org: UnsafeRawBufferPointer, user: UnsafeRawBufferPointer) -> MemberIndex.Key? {
        guard let o = key(org), let u = key(user) else { return nil }
        return MemberIndex.Key(org0: o.0, org1: o.1, user0: u.0, user1: u.1)
    }
}
