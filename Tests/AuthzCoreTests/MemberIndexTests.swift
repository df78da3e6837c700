@testable import AuthzCore
import Testing

/// Members whose org and user ids are canonical lowercase UUIDs are kept apart, keyed in
/// binary (`MemberIndex`); every other member by its ids' bytes. Which one holds a member must
/// never show: the same ids in another spelling are another member, and the index must keep
/// every member it is given through inserts, replaces, deletes and snapshots.
@Suite struct MemberIndexTests {
    static let org = "0f8fad5b-d9cb-469f-a165-70867728950e"
    static let user = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

    @Test(arguments: [
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "01234567-89ab-cdef-0123-456789abcdef",
    ])
    func canonicalTextRoundTrips(_ text: String) throws {
        let key = try #require(withBytes(text, UUIDText.key))
        #expect(UUIDText.text(key) == text)
    }

    @Test(arguments: [
        "0F8FAD5B-D9CB-469F-A165-70867728950E",   // uppercase
        "0f8fad5b-d9cb-469f-a165-70867728950E",   // one uppercase digit
        "{0f8fad5b-d9cb-469f-a165-70867728950e}", // braces
        "0f8fad5bd9cb469fa16570867728950e",       // no dashes
        "0f8fad5b-d9cb-469f-a165-70867728950",    // 35 bytes
        "0f8fad5b-d9cb-469f-a165-70867728950e0",  // 37 bytes
        "0f8fad5b_d9cb-469f-a165-70867728950e",   // a dash replaced
        "0f8fad5b-d9cb-469f-a165-7086772895-e",   // a dash where a digit goes
        "0f8fad5g-d9cb-469f-a165-70867728950e",   // g
        "0f8fad5b-d9cb-469f-a165-70867728950/",   // '/' is just below '0'
        "0f8fad5b-d9cb-469f-a165-70867728950:",   // ':' just above '9'
        "0f8fad5b-d9cb-469f-a165-70867728950`",   // '`' just below 'a'
        "0f8fad5b-d9cb-469f-a165-7086772895\u{e9}", // a two-byte character in the last place
        "",
    ])
    func otherSpellingsAreNotKeys(_ text: String) {
        #expect(withBytes(text, UUIDText.key) == nil)
    }

    /// Each of the 32 digits and each of their 16 values lands somewhere of its own.
    @Test func distinctDigitsMakeDistinctKeys() throws {
        let base = Array("00000000-0000-0000-0000-000000000000".utf8)
        var keys: Set<[UInt64]> = []
        for place in base.indices where base[place] != 0x2D {
            for digit in Array("0123456789abcdef".utf8) {
                var text = base
                text[place] = digit
                let k = try #require(text.withUnsafeBytes(UUIDText.key))
                keys.insert([k.0, k.1])
                #expect(UUIDText.text(k) == String(decoding: text, as: UTF8.self))
            }
        }
        #expect(keys.count == 32 * 15 + 1)
    }

    /// A member with UUID ids is found under exactly its ids' bytes: uppercase, or the org and
    /// user swapped, are other (unknown) members, and a member with uppercase ids is kept too.
    @Test func idsAreMatchedByTheirBytes() throws {
        let upperOrg = Self.org.uppercased(), upperUser = Self.user.uppercased()
        let dir = try Fixtures.build([
            .org(.init(id: Self.org)), .org(.init(id: upperOrg)),
            .member(.init(org: Self.org, user: Self.user, role: "member", assignments: ["developer"])),
            .member(.init(org: upperOrg, user: upperUser, role: "owner")),
        ])
        #expect(try dir.reason("user:" + Self.user, "write", "sandbox:s", org: Self.org) == .assignment)
        #expect(try dir.reason("user:" + upperUser, "write", "sandbox:s", org: Self.org) == .notMember)
        #expect(try dir.reason("user:" + Self.user, "write", "sandbox:s", org: upperOrg) == .notMember)
        #expect(try dir.reason("user:" + Self.org, "write", "sandbox:s", org: Self.user) == .notMember)
        #expect(try dir.reason("user:" + upperUser, "update", "org:x", org: upperOrg) == .owner)
        #expect(try dir.reason("user:" + Self.user, "update", "org:x", org: Self.org) == .ownerRequired)
        #expect(dir.members.index.count == 1 && dir.members.others.count == 1)
        let rebuilt = try Fixtures.build(dir.records())
        #expect(Set(rebuilt.records().map { "\($0)" }) == Set(dir.records().map { "\($0)" }))
    }

    /// What a replace reports as deleted counts the members of both tables that the new
    /// directory no longer has, and only those.
    @Test func removedMembersAreCountedInBothTables() throws {
        let other = "7c9e6679-7425-40de-944b-e07fc1f90ae8"
        let upperUser = Self.user.uppercased()
        let org: Record = .org(.init(id: Self.org))
        let members: [Record] = [Self.user, other, upperUser, "plain"].map {
            .member(.init(org: Self.org, user: $0, role: "member"))
        }
        let dir = try Fixtures.build([org] + members)
        #expect(dir.members.index.count == 2 && dir.members.others.count == 2)
        let next = try Fixtures.build([org, members[0], members[2]])
        #expect(dir.countRemoved(in: next) == 2)
        #expect(next.countRemoved(in: dir) == 0)
        #expect(dir.countRemoved(in: try Fixtures.build([org])) == 4)
    }

    /// The index against a dictionary, through random inserts, replaces and deletes of keys
    /// crowded into few shards (a few thousand keys in 4,096 shards make probe chains, and
    /// deletes inside them), with a snapshot kept before each round that must not change.
    @Test func indexAgreesWithADictionary() throws {
        var rng = SplitMix64(seed: 0x1DE7)
        let lists = (0..<3).map { _ in NameList.empty(globalMask: 0, base: PermissionSet()) }
        func entry(_ i: Int) -> Directory.MemberEntry {
            Directory.MemberEntry(assignments: lists[i % 3], role: i % 2 == 0 ? .owner : .member)
        }
        // Keys from a small pool, so replaces and deletes hit keys that are there.
        let pool = (0..<12_000).map { _ in MemberIndex.Key(org0: rng.next(), org1: rng.next() & 0xF, user0: rng.next(), user1: 7) }
        var index = MemberIndex()
        var model: [[UInt64]: Int] = [:]
        func same(_ index: MemberIndex, _ model: [[UInt64]: Int]) -> Bool {
            guard index.count == model.count else { return false }
            for k in pool {
                let found = index.find(k)
                let expected = model[[k.org0, k.org1, k.user0, k.user1]].map(entry)
                if found?.listAddress != expected?.listAddress || found?.role != expected?.role { return false }
            }
            var seen = 0
            index.forEach { k, _ in if model[[k.org0, k.org1, k.user0, k.user1]] != nil { seen += 1 } }
            return seen == model.count
        }
        for round in 0..<6 {
            let snapshot = index, snapshotModel = model
            for _ in 0..<8_000 {
                let k = pool[rng.below(pool.count)]
                let name = [k.org0, k.org1, k.user0, k.user1]
                if rng.chance(round < 3 ? 0.3 : 0.6) {
                    let old = index.remove(k)
                    #expect((old == nil) == (model.removeValue(forKey: name) == nil))
                } else {
                    let v = rng.below(6)
                    let old = index.upsert(k, entry(v))
                    #expect(old?.listAddress == model[name].map(entry)?.listAddress)
                    model[name] = v
                }
            }
            #expect(same(index, model), "round \(round)")
            #expect(same(snapshot, snapshotModel), "the snapshot before round \(round) changed")
            index.shrinkToFit()
            #expect(same(index, model), "round \(round), shrunk")
        }
        let removed = index.removeAll { $0.org1 == 3 }
        #expect(removed.count == model.keys.filter { $0[1] == 3 }.count)
        model = model.filter { $0.key[1] != 3 }
        #expect(same(index, model))
    }
}
