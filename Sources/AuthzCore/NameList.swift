/// A list of names as a record sent it: the assignments of a member or an invitation, the
/// permissions of an api key or a custom role. Lists repeat (a million members hold ~76k
/// distinct lists, most of them a few hundred lists of global assignments), so each
/// distinct list is stored once, in a `NameListTable`, and entries point at it.
///
/// An assignment list also carries what the check path needs of it, so that a member entry
/// is only its role and this pointer: the global assignments it holds (the implied one
/// included) and their permissions, both functions of the names and the policy.
///
/// One allocation (`NameListStorage`): a header, the names joined by `ByteMap.separator`
/// (names are valid ids or policy names, which hold no control character, so the joined
/// form is unambiguous), then, for an assignment list, where its custom roles are in it
/// (offset and length, 4 bytes each), so the check path walks them without a `String`, an
/// array or a retain. Immutable once made, hence `Sendable` (`ManagedBuffer` is not).
struct NameList: @unchecked Sendable {
    let storage: NameListStorage

    init(storage: NameListStorage) { self.storage = storage }

    /// A list of `names`, joined in `joined`; `customRoles` are the indices of the names
    /// that are custom roles, each role once; `globalMask` and `base` what an assignment list
    /// grants (zero for a permission list).
    init(joined: UnsafeRawBufferPointer, hash: UInt64, names: [String], customRoles: [Int], globalMask: UInt64, base: PermissionSet) {
        let spans = (joined.count + 3) & ~3
        let header = NameListHeader(hash: hash, globalMask: globalMask, base: base, length: Int32(joined.count),
                                    nameCount: Int32(names.count), customCount: Int32(customRoles.count))
        storage = unsafeDowncast(NameListStorage.create(minimumCapacity: spans + 8 * customRoles.count) { _ in header },
                                 to: NameListStorage.self)
        storage.withUnsafeMutablePointerToElements { p in
            let base = UnsafeMutableRawPointer(p)
            if joined.count > 0 { base.copyMemory(from: joined.baseAddress!, byteCount: joined.count) }
            // Where each name starts in the joined bytes.
            var starts: [Int] = []
            if !customRoles.isEmpty {
                starts.reserveCapacity(names.count)
                var at = 0
                for n in names {
                    starts.append(at)
                    at += n.utf8.count + 1
                }
            }
            for (i, c) in customRoles.enumerated() {
                (base + spans + 8 * i).storeBytes(of: UInt32(starts[c]), as: UInt32.self)
                (base + spans + 8 * i + 4).storeBytes(of: UInt32(names[c].utf8.count), as: UInt32.self)
            }
        }
    }

    /// The empty assignment list of a member with no assignments: it holds `globalMask` (the
    /// implied assignment) and `base`. Not in a table: a directory keeps one.
    static func empty(globalMask: UInt64, base: PermissionSet) -> NameList {
        NameList(joined: UnsafeRawBufferPointer(start: nil, count: 0), hash: 0, names: [], customRoles: [],
                 globalMask: globalMask, base: base)
    }

    var hasCustomRoles: Bool { storage.fields.customCount > 0 }
    /// Global assignments held through the list, the implied one included (bit = index).
    var globalMask: UInt64 { storage.fields.globalMask }
    /// Their permissions.
    var base: PermissionSet { storage.fields.base }

    /// The names, as the record sent them.
    var names: [String] {
        guard storage.fields.nameCount > 0 else { return [] }
        return storage.withUnsafeMutablePointers { h, p in
            UnsafeRawBufferPointer(start: p, count: Int(h.pointee.length))
                .split(separator: ByteMap<Int>.separator, omittingEmptySubsequences: false)
                .map { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// The custom roles, as `String`s (off the check path).
    var customRoles: [String] {
        var out: [String] = []
        forEachCustomRole { out.append(String(decoding: $0, as: UTF8.self)) }
        return out
    }

    /// Calls `body` with the bytes of each custom role id, in order.
    @inline(__always)
    func forEachCustomRole(_ body: (UnsafeRawBufferPointer) -> Void) { storage.forEachCustomRole(body) }

    /// Whether the joined names are `joined`.
    func joinedEquals(_ joined: UnsafeRawBufferPointer) -> Bool {
        storage.withUnsafeMutablePointers { h, p in
            bytesEqual(UnsafeRawBufferPointer(start: p, count: Int(h.pointee.length)), joined)
        }
    }

    /// Bytes allocated for it (object header, `NameListHeader`, names and spans), for
    /// `memoryBreakdown`.
    var allocatedBytes: Int {
        let h = storage.fields
        return 16 + MemoryLayout<NameListHeader>.stride + ((Int(h.length) + 3) & ~3) + 8 * Int(h.customCount)
    }

    static func === (a: NameList, b: NameList) -> Bool { a.storage === b.storage }
}

/// The storage of a `NameList`: a header and the bytes, in one allocation. The header is
/// read through its pointer: `ManagedBuffer.header` is a class's `var`, and each read of it
/// paid a dynamic exclusivity check (~25 instructions a check).
final class NameListStorage: ManagedBuffer<NameListHeader, UInt8> {
    @inline(__always)
    var fields: NameListHeader { withUnsafeMutablePointerToHeader { $0.pointee } }

    /// Calls `body` with the bytes of each custom role id, in order.
    @inline(__always)
    func forEachCustomRole(_ body: (UnsafeRawBufferPointer) -> Void) {
        withUnsafeMutablePointers { h, p in
            let base = UnsafeRawPointer(p)
            let spans = base + ((Int(h.pointee.length) + 3) & ~3)
            for i in 0..<Int(h.pointee.customCount) {
                let offset = spans.loadUnaligned(fromByteOffset: 8 * i, as: UInt32.self)
                let length = spans.loadUnaligned(fromByteOffset: 8 * i + 4, as: UInt32.self)
                body(UnsafeRawBufferPointer(start: base + Int(offset), count: Int(length)))
            }
        }
    }
}

struct NameListHeader {
    /// The list's key in its table: the `ByteHash` of the joined names, or, should another
    /// list hold that key already, the next free value after it.
    var hash: UInt64
    var globalMask: UInt64
    var base: PermissionSet
    /// Bytes of the joined names.
    var length: Int32
    var nameCount: Int32
    var customCount: Int32
}

/// The distinct lists of a directory, each with how many entries use it: a list is made
/// when the first entry names it and dropped from the table when the last one goes, so the
/// table holds exactly the lists in use.
///
/// Snapshots share it as they share their maps: it is a `ByteMap` (copy-on-write per shard)
/// keyed by the list's 64-bit hash. Member entries hold their list without a reference count
/// (`Directory.MemberEntry`), so the table must own every list a member points at: a list is
/// dropped only by the `release` of its last use, and two different lists with the same hash
/// (not seen in practice) are both kept, the second under the next free key. Other holders
/// (roles, api keys, invitations) hold their lists strongly as well.
struct NameListTable: Sendable {
    struct Interned: Sendable {
        var list: NameList
        var uses: Int32
    }

    private(set) var map: ByteMap<Interned>

    init(shardBits: Int) { map = ByteMap(shardBits: shardBits) }

    /// The shared list of `names` (validated), with one more use; nil for an empty list.
    /// `customRoles` are the indices of the names that are custom roles, each role once;
    /// `globalMask` and `base` what an assignment list grants.
    /// `hash` replaces the names' hash (tests: lists whose hashes collide).
    mutating func intern(_ names: [String], customRoles: [Int] = [], globalMask: UInt64 = 0, base: PermissionSet = PermissionSet(),
                         hash: UInt64? = nil) -> NameList? {
        guard !names.isEmpty else { return nil }
        var length = names.count - 1
        for n in names { length += n.utf8.count }
        return withUnsafeTemporaryAllocation(byteCount: length, alignment: 1) { buffer in
            var at = 0
            for (i, n) in names.enumerated() {
                if i > 0 {
                    buffer[at] = ByteMap<Int>.separator
                    at += 1
                }
                withBytes(n) { b in
                    if b.count > 0 { (buffer.baseAddress! + at).copyMemory(from: b.baseAddress!, byteCount: b.count) }
                    at += b.count
                }
            }
            let joined = UnsafeRawBufferPointer(buffer)
            // The list's key is its hash; a key another list holds (two lists, one hash) moves
            // it on to the next. A lookup stops at the first free key: past a list dropped
            // from between, an equal list is made again, not found (correct, only not shared).
            var key = hash ?? ByteHash.hash(joined)
            while true {
                let list: NameList? = withUnsafeBytes(of: key.littleEndian) { k in
                    var found: NameList?
                    var taken = false
                    map.update(bytes: k) { entry in
                        taken = true
                        if entry.list.joinedEquals(joined) {
                            entry.uses += 1
                            found = entry.list
                        }
                    }
                    if taken { return found }
                    let list = NameList(joined: joined, hash: key, names: names, customRoles: customRoles,
                                        globalMask: globalMask, base: base)
                    map.upsert(bytes: k, Interned(list: list, uses: 1))
                    return list
                }
                if let list { return list }
                key &+= 1
            }
        }
    }

    /// One more use of `list`, if the table holds it (the same list, not an equal one); false
    /// if it does not (it was dropped after its last use: intern the names again).
    mutating func use(_ list: NameList) -> Bool {
        var held = false
        withUnsafeBytes(of: list.storage.fields.hash.littleEndian) { key in
            map.update(bytes: key) { entry in
                guard entry.list === list else { return }
                entry.uses += 1
                held = true
            }
        }
        return held
    }

    /// One use of `list` fewer: the table drops it after its last.
    mutating func release(_ list: NameList?) {
        // The empty list is not in a table.
        guard let list, list.storage.fields.nameCount > 0 else { return }
        withUnsafeBytes(of: list.storage.fields.hash.littleEndian) { key in
            var unused = false
            map.update(bytes: key) { entry in
                guard entry.list === list else { return }
                entry.uses -= 1
                unused = entry.uses <= 0
            }
            if unused { map.remove(bytes: key) }
        }
    }

    var count: Int { map.count }

    /// Sizes the table to its lists (see `ByteMap.shrinkToFit`).
    mutating func shrinkToFit() { map.shrinkToFit() }

    /// Every list and its use count.
    func forEach(_ body: (NameList, Int) -> Void) {
        map.forEachBytes { _, entry, _ in body(entry.list, Int(entry.uses)) }
    }
}
