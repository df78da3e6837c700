/// Every member of every org: a member whose org and user ids are both canonical UUIDs is in
/// `index` (keyed in binary, one cache line a lookup: see `MemberIndex`), any other in
/// `others` (a `ByteMap` keyed by the ids' bytes). A member is in exactly one of the two,
/// chosen by its ids alone, so every lookup knows where to look.
struct MemberTable: Sendable {
    private(set) var index = MemberIndex()
    /// Payload: what the check path reads of a member (`MemberFacts`), so a lookup reads the
    /// slot and the key's bytes, which the facts follow, and not the entry.
    private(set) var others = ByteMap<Directory.MemberEntry>(shardBits: 12, payloads: true)

    var count: Int { index.count + others.count }

    /// The check path's lookup: what the decision needs of the member, or nil.
    @inline(__always)
    func facts(org: UnsafeRawBufferPointer, user: UnsafeRawBufferPointer) -> Directory.MemberFacts? {
        if let k = UUIDText.memberKey(org: org, user: user) {
            return index.find(k).map { Directory.MemberFacts(role: $0.role, assignments: $0.list) }
        }
        return others.withPayload(org, user) { Directory.memberFacts($0) }
    }

    func find(_ org: UnsafeRawBufferPointer, _ user: UnsafeRawBufferPointer) -> Directory.MemberEntry? {
        if let k = UUIDText.memberKey(org: org, user: user) { return index.find(k) }
        return others.find(org, user)
    }

    subscript(org: String, user: String) -> Directory.MemberEntry? {
        withBytes(org) { o in withBytes(user) { u in find(o, u) } }
    }

    /// Inserts or replaces; returns the previous entry.
    mutating func upsert(org: String, user: String, _ entry: Directory.MemberEntry) -> Directory.MemberEntry? {
        if let k = Self.key(org, user) { return index.upsert(k, entry) }
        return others.upsert(org, user, entry, payloadLength: Directory.memberFactsLength) {
            Directory.writeMemberFacts(role: entry.role, list: entry.list, to: $0)
        }
    }

    /// Removes the member; returns its entry, nil if there was none.
    mutating func remove(org: String, user: String) -> Directory.MemberEntry? {
        if let k = Self.key(org, user) { return index.remove(k) }
        return others.remove(org, user)
    }

    /// Removes every member of `org`; returns their entries.
    mutating func removeAll(org: String) -> [Directory.MemberEntry] {
        var removed: [Directory.MemberEntry] = []
        if let o = withBytes(org, UUIDText.key) {
            removed += index.removeAll { $0.org0 == o.0 && $0.org1 == o.1 }.map(\.1)
        }
        // Ids compare as bytes, as the maps do: `String`'s `hasPrefix` would also match an id
        // that is only canonically equivalent (`é` and `e` + U+0301).
        let prefix = Array(org.utf8) + [ByteMap<Directory.MemberEntry>.separator]
        removed += others.removeAll { k, _, _ in k.starts(with: prefix) }.map(\.1)
        return removed
    }

    /// Removes every membership of `user`; returns the orgs and entries removed.
    mutating func removeAll(user: String) -> [(org: String, entry: Directory.MemberEntry)] {
        var removed: [(org: String, entry: Directory.MemberEntry)] = []
        if let u = withBytes(user, UUIDText.key) {
            removed += index.removeAll { $0.user0 == u.0 && $0.user1 == u.1 }.map { (UUIDText.text(($0.0.org0, $0.0.org1)), $0.1) }
        }
        let suffix = [ByteMap<Directory.MemberEntry>.separator] + Array(user.utf8)
        let others = others.removeAll { k, _, _ in
            k.count >= suffix.count && UnsafeRawBufferPointer(rebasing: k[(k.count - suffix.count)...]).elementsEqual(suffix)
        }
        removed += others.map { (ByteMap<Directory.MemberEntry>.parts($0.0).0, $0.1) }
        return removed
    }

    /// The user ids of `org`'s members, in no particular order: O(members), as a scan of the
    /// keys (no `String` made for a member of another org).
    func users(of org: String) -> [String] {
        var out: [String] = []
        if let o = withBytes(org, UUIDText.key) {
            index.forEach { k, _ in if k.org0 == o.0 && k.org1 == o.1 { out.append(UUIDText.text((k.user0, k.user1))) } }
        }
        // Ids compare as bytes, as the maps do (`String`'s `hasPrefix` is canonical equivalence).
        let prefix = Array(org.utf8) + [ByteMap<Directory.MemberEntry>.separator]
        others.forEachBytes { k, _, _ in
            if k.starts(with: prefix) { out.append(String(decoding: k.dropFirst(prefix.count), as: UTF8.self)) }
        }
        return out
    }

    /// Every member (org id, user id, entry), in no particular order.
    func forEach(_ body: (String, String, Directory.MemberEntry) throws -> Void) rethrows {
        try index.forEach { k, e in try body(UUIDText.text((k.org0, k.org1)), UUIDText.text((k.user0, k.user1)), e) }
        try others.forEach { k, e in
            let (org, user) = ByteMap<Directory.MemberEntry>.parts(k)
            try body(org, user, e)
        }
    }

    /// How many of these members `next` does not hold, by their keys as stored (no `String`
    /// made, no id parsed again).
    func countAbsent(from next: MemberTable) -> Int {
        var n = 0
        index.forEach { k, _ in if next.index.find(k) == nil { n += 1 } }
        // Composite keys are stored joined by the separator but hashed from their parts.
        others.forEachBytes { k, _, _ in
            let (org, user) = ByteMap<Directory.MemberEntry>.parts(k)
            if next.others.withValue(org, user, { _ in true }) == nil { n += 1 }
        }
        return n
    }

    /// Sizes the tables for `e.members` members, `e.indexedMembers` of them with UUID ids.
    mutating func reserve(_ e: DirectoryBuilder.Expected) {
        if e.indexedMembers > 0 { index.reserve(e.indexedMembers) }
        let rest = e.members - e.indexedMembers
        if rest > 0 {
            // Key bytes of the others: the UUID pairs' are 73 each.
            let bytes = max(0, e.memberKeyBytes - 73 * e.indexedMembers)
            others.reserve(rest, arenaBytes: bytes + rest * Directory.memberFactsLength)
        }
    }

    mutating func shrinkToFit() {
        index.shrinkToFit()
        others.shrinkToFit()
    }

    /// The index key of a member with these ids, if both are canonical UUIDs.
    static func key(_ org: String, _ user: String) -> MemberIndex.Key? {
        withBytes(org) { o in withBytes(user) { u in UUIDText.memberKey(org: o, user: u) } }
    }
}
