@testable import AuthzCore
import Testing

/// Snapshots share storage: the shards of every map, and the name lists (assignments,
/// permissions) each stored once for every entry and every snapshot that names them. A batch
/// applied to one snapshot must never show in another, what a snapshot stores must rebuild
/// it, and the list tables must hold exactly the lists in use.
@Suite struct SharedStorageTests {
    /// The fixture policy with an invitee action, so invitations and emails are decided on.
    static let policy: CompiledPolicy = {
        var d = Fixtures.definition
        d.resourceTypes.append(.init(name: "invitation", actions: [.init(name: "accept", requirement: .invitee)]))
        return try! CompiledPolicy(d)
    }()

    /// Lists repeat across members, invitations and orgs: `["ci"]` is a custom role of both
    /// acme and beta, with different permissions, behind one shared list.
    static let base: [Record] = {
        var r: [Record] = [
            .org(.init(id: "acme")), .org(.init(id: "beta")), .org(.init(id: "solo", personal: true)),
            .role(.init(org: "acme", id: "ci", permissions: ["delete:sandboxes"])),
            .role(.init(org: "acme", id: "bill", permissions: ["read:billing", "read:sandboxes"])),
            .role(.init(org: "beta", id: "ci", permissions: ["read:billing"])),
        ]
        let lists: [[String]] = [[], ["dev"], ["dev", "ci"], ["ci"], ["billing", "ci", "bill"], ["developer"]]
        for u in 0..<24 {
            let email: String? = switch u % 4 {
            case 0: nil
            case 1: "User\(u)@Example.IO"   // in another ASCII case than `i1` names it
            case 2: "caf\u{E9}\(u)@x.io"    // non-ASCII, already lowercase
            default: "user\(u)@x.io"
            }
            r.append(.user(.init(id: "u\(u)", email: email, emailVerified: u % 5 != 0)))
            r.append(.member(.init(org: "acme", user: "u\(u)", role: u == 0 ? "owner" : "member", assignments: lists[u % lists.count])))
            if u % 2 == 0 {
                let list = u % 3 == 0 ? ["ci"] : []
                r.append(.member(.init(org: "beta", user: "u\(u)", role: u == 2 ? "owner" : "member", assignments: list)))
            }
            if u % 3 == 0 {
                r.append(.apiKey(.init(id: "k\(u)", org: u % 2 == 0 ? "beta" : "acme", user: "u\(u)",
                                       permissions: u % 2 == 0 ? ["read:billing"] : ["write:sandboxes", "delete:sandboxes"],
                                       expiresAt: u % 9 == 0 ? Timestamp(seconds: 1_700_000_000) : nil)))
            }
        }
        r.append(.member(.init(org: "solo", user: "u1", role: "owner")))
        // The invitee's email as the user spelled it and in another ASCII case, which name the
        // user, and canonically equivalent (decomposed é), which does not.
        r.append(.invitation(.init(id: "i1", org: "acme", email: "user1@example.io", role: "member", assignments: ["dev", "ci"], status: "pending")))
        r.append(.invitation(.init(id: "i2", org: "beta", email: "USER3@X.IO", role: "member", assignments: ["ci"], status: "pending")))
        r.append(.invitation(.init(id: "i3", org: "acme", email: "cafe\u{301}2@x.io", role: "member", status: "pending")))
        r.append(.invitation(.init(id: "i4", org: "acme", email: "user7@x.io", role: "member", assignments: ["developer"], status: "accepted")))
        return r
    }()

    /// Each batch is applied to the snapshot the previous one made.
    static let batches: [[Record]] = [
        // Lists change hands: u1 takes a list others hold, u2 one nobody held, u3 goes; a role
        // of a shared list changes its permissions.
        [
            .member(.init(org: "acme", user: "u1", role: "member", assignments: ["dev", "ci"])),
            .member(.init(org: "acme", user: "u2", role: "member", assignments: ["viewer", "bill"])),
            .delete(.member(org: "acme", user: "u3")),
            // A second owner: u0 is no longer the last (an org's counts change in place).
            .member(.init(org: "acme", user: "u5", role: "owner")),
            .role(.init(org: "acme", id: "ci", permissions: ["read:billing"])),
            .apiKey(.init(id: "k3", org: "acme", user: "u4", permissions: ["read:sandboxes"])),
            // A list first named by an invitation, then by members (next batch): it must
            // grant them what it grants a member.
            .invitation(.init(id: "i5", org: "acme", email: "new@x.io", role: "member", assignments: ["billing", "dev"], status: "pending")),
        ],
        // Payloads rewritten: emails, a key's org and user, an invitation moved to another org.
        [
            .user(.init(id: "u5", email: "Moved5@Example.IO", emailVerified: true)),
            .user(.init(id: "u6", email: nil, emailVerified: true)),
            .user(.init(id: "u7", email: "user7@x.io", emailVerified: true)),
            .apiKey(.init(id: "k0", org: "acme", user: "u0", permissions: ["read:billing", "write:sandboxes"])),
            .invitation(.init(id: "i2", org: "acme", email: "moved5@example.io", role: "member", assignments: ["ci", "bill"], status: "pending")),
            .member(.init(org: "acme", user: "u9", role: "member", assignments: ["billing", "dev"])),
        ],
        // Cascades: an org (its members, roles, keys, invitations) and a user.
        [.delete(.org("beta")), .delete(.user("u4")), .delete(.invitation("i3"))],
        // Back again: lists interned anew, some the same as before.
        [
            .org(.init(id: "beta")),
            .role(.init(org: "beta", id: "ci", permissions: ["write:sandboxes"])),
            .member(.init(org: "beta", user: "u6", role: "member", assignments: ["ci"])),
            .member(.init(org: "beta", user: "u8", role: "owner", assignments: ["dev", "ci"])),
            .member(.init(org: "acme", user: "u4", role: "member", assignments: ["billing", "ci", "bill"])),
            .apiKey(.init(id: "k4", org: "beta", user: "u6", permissions: ["write:sandboxes"])),
            .invitation(.init(id: "i3", org: "beta", email: "user11@x.io", role: "member", assignments: ["ci"], status: "pending")),
        ],
    ]

    static func lines(_ records: [Record]) -> [LocatedRecord] {
        records.enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }
    }

    /// Every decision of a grid of subjects, actions and orgs.
    static func answers(_ dir: Directory) -> [Decision?] {
        let subjects = (0..<24).map { "user:u\($0)" } + (0..<24).map { "api_key:k\($0)" }
        let requests = [("read", "sandbox:s"), ("write", "sandbox:s"), ("delete", "sandbox:s"), ("read", "billing:b"),
                        ("leave", "member:u0"), ("update", "org:x"),
                        ("accept", "invitation:i1"), ("accept", "invitation:i2"), ("accept", "invitation:i3"), ("accept", "invitation:i4")]
        var out: [Decision?] = []
        for org in ["acme", "beta", "solo"] {
            for s in subjects {
                for (action, resource) in requests {
                    out.append(try? dir.check(subject: s, action: action, resource: resource, org: org, now: Fixtures.now))
                }
            }
        }
        return out
    }

    /// Every list an entry points at is in its table (the same object) with as many uses as
    /// entries point at it, and the table holds no other. Member entries hold their list
    /// without a reference count, so their addresses are checked first, without reading
    /// through them (a list freed under a member would crash the check, not fail it): each is
    /// a list of the table or the directory's empty list, and the one its payload repeats.
    static func listUseErrors(_ dir: Directory) -> [String] {
        var errors: [String] = []
        var owned: Set<UnsafeMutableRawPointer> = [Unmanaged.passUnretained(dir.emptyAssignments.storage).toOpaque()]
        dir.assignmentLists.forEach { list, _ in owned.insert(Unmanaged.passUnretained(list.storage).toOpaque()) }
        dir.members.forEach { org, user, m in
            let key = "\(org)/\(user)"
            if !owned.contains(m.listAddress) { errors.append("member \(key): its list is not one the directory owns") }
            let facts = withBytes(org) { o in withBytes(user) { u in dir.members.facts(org: o, user: u) } }
            if facts?.assignments.toOpaque() != m.listAddress || facts?.role != m.role {
                errors.append("member \(key): the check path reads another list or role than the entry")
            }
        }
        if !errors.isEmpty { return errors }
        func check(_ name: String, _ table: NameListTable, _ used: [ObjectIdentifier: Int]) {
            var inTable: [ObjectIdentifier: Int] = [:]
            table.forEach { list, uses in inTable[ObjectIdentifier(list.storage)] = uses }
            if inTable != used { errors.append("\(name): table \(inTable.values.sorted()) != entries \(used.values.sorted())") }
        }
        var assignments: [ObjectIdentifier: Int] = [:], permissions: [ObjectIdentifier: Int] = [:]
        func use(_ list: NameList?, _ counts: inout [ObjectIdentifier: Int]) {
            guard let list, !list.names.isEmpty else { return }
            counts[ObjectIdentifier(list.storage), default: 0] += 1
        }
        dir.members.forEach { _, _, m in use(m.assignments, &assignments) }
        dir.invitations.forEachBytes { _, i, _ in use(i.assignments, &assignments) }
        dir.keys.forEachBytes { _, k, _ in use(k.permissions, &permissions) }
        dir.roles.forEachBytes { _, r, _ in use(r.permissions, &permissions) }
        check("assignment lists", dir.assignmentLists, assignments)
        check("permission lists", dir.permissionLists, permissions)
        return errors
    }

    @Test func aBatchNeverChangesAnOlderSnapshot() throws {
        var snapshots = [try Directory.build(Self.lines(Self.base), policy: Self.policy)]
        var records = [Set(snapshots[0].records())]
        var answers = [Self.answers(snapshots[0])]
        #expect(records[0] == Set(Self.base))
        for (b, batch) in Self.batches.enumerated() {
            let next = try snapshots.last!.applying(Self.lines(batch)).directory
            snapshots.append(next)
            records.append(Set(next.records()))
            answers.append(Self.answers(next))
            #expect(Self.listUseErrors(next).isEmpty, "batch \(b): \(Self.listUseErrors(next))")
            for (i, old) in snapshots.enumerated() {
                #expect(Self.listUseErrors(old).isEmpty, "snapshot \(i) lists after batch \(b): \(Self.listUseErrors(old))")
                #expect(Set(old.records()) == records[i], "snapshot \(i) records changed by batch \(b)")
                #expect(Self.answers(old) == answers[i], "snapshot \(i) answers changed by batch \(b)")
            }
        }
        // Every batch changed something the grid sees.
        for i in 1..<answers.count { #expect(answers[i] != answers[i - 1], "batch \(i - 1) changed no answer") }
    }

    /// What a snapshot made by batches stores rebuilds a directory (fresh tables, nothing
    /// shared) that answers the same.
    @Test func recordsOfEverySnapshotRebuildIt() throws {
        var dir = try Directory.build(Self.lines(Self.base), policy: Self.policy)
        for batch in Self.batches {
            dir = try dir.applying(Self.lines(batch)).directory
            let rebuilt = try Directory.build(Self.lines(dir.records()), policy: Self.policy)
            #expect(Set(rebuilt.records()) == Set(dir.records()))
            #expect(Self.answers(rebuilt) == Self.answers(dir))
            #expect(Self.listUseErrors(rebuilt).isEmpty)
        }
    }

    /// Emails are compared byte for byte but for ASCII case: a canonically equivalent
    /// spelling is another email.
    @Test func inviteesAreFoundByEmailsEqualButForASCIICase() throws {
        let dir = try Directory.build(Self.lines(Self.base), policy: Self.policy)
        func reason(_ user: String, _ invitation: String, _ org: String) throws -> Reason {
            try dir.check(subject: "user:\(user)", action: "accept", resource: "invitation:\(invitation)", org: org, now: Fixtures.now).reason
        }
        #expect(try reason("u1", "i1", "acme") == .invitee)      // User1@Example.IO
        #expect(try reason("u3", "i2", "beta") == .invitee)      // user3@x.io invited as USER3@X.IO
        #expect(try reason("u2", "i3", "acme") == .notInvitee)   // café2 composed, invited decomposed
        #expect(try reason("u7", "i4", "acme") == .notInvitee)   // not pending
        #expect(try reason("u5", "i1", "acme") == .notInvitee)   // someone else's
        #expect(try reason("u1", "i1", "beta") == .notInvitee)   // another org's
    }

    /// Who may accept an invitation, by the check and by the listing (`/v1/subjects`): the
    /// users whose verified email is the invitation's but for ASCII case. Unicode case mapping
    /// made `\u{212A}im@x.io` (KELVIN SIGN) the invitee of an invitation sent to `kim@x.io`.
    @Test func anInviteeEmailDiffersFromTheInvitationsInASCIICaseAtMost() throws {
        let emails = [
            "exact": "kim@x.io", "upper": "KIM@X.Io", "kelvin": "\u{212A}im@x.io", "kelvinUpper": "\u{212A}IM@x.io",
            "jose": "jos\u{E9}@x.io", "joseAsciiUpper": "JOS\u{E9}@X.IO", "joseUpper": "JOS\u{C9}@x.io",
            "joseDecomposed": "jose\u{301}@x.io", "backtick": "kim`x.io", // `@` and `` ` `` differ as cases do
        ]
        let invitations = ["kim": "kim@x.io", "kelvin": "\u{212A}im@x.io", "jose": "jos\u{E9}@x.io"]
        let expected = [
            "kim": ["user:exact", "user:upper"],
            "kelvin": ["user:kelvin", "user:kelvinUpper"],
            "jose": ["user:jose", "user:joseAsciiUpper"],
        ]
        var records: [Record] = [.org(.init(id: "acme"))]
        for (user, email) in emails { records.append(.user(.init(id: user, email: email, emailVerified: true))) }
        for (id, email) in invitations {
            records.append(.invitation(.init(id: id, org: "acme", email: email, role: "member", status: "pending")))
        }
        let dir = try Directory.build(Self.lines(records), policy: Self.policy)
        for (invitation, invitees) in expected {
            let listed = try dir.subjects(org: "acme", action: "accept", resource: "invitation:\(invitation)", now: Fixtures.now)
            #expect(listed == invitees, "\(invitation)")
            for user in emails.keys.sorted() {
                let reason = try dir.check(subject: "user:\(user)", action: "accept", resource: "invitation:\(invitation)",
                                           org: "acme", now: Fixtures.now).reason
                #expect(reason == (invitees.contains("user:\(user)") ? .invitee : .notInvitee), "\(user) accepting \(invitation)")
            }
        }
    }

    /// Lists are shared, and go with the last entry that uses them.
    @Test func listsAreSharedAndDroppedWithTheirLastUse() throws {
        var dir = try Directory.build(Self.lines(Self.base), policy: Self.policy)
        // Distinct non-empty assignment lists of members and invitations.
        #expect(dir.assignmentLists.count == 5)
        let shared = try #require(dir.members["acme", "u2"]?.assignments.storage)
        #expect(dir.members["acme", "u8"]?.assignments.storage === shared)
        #expect(dir.invitations["i1"]?.assignments.storage === shared)
        let old = dir
        dir = try dir.applying(Self.lines([
            .member(.init(org: "acme", user: "u2", role: "member")),
            .member(.init(org: "acme", user: "u8", role: "member")),
            .member(.init(org: "acme", user: "u14", role: "member")),
            .member(.init(org: "acme", user: "u20", role: "member")),
            .member(.init(org: "beta", user: "u8", role: "member")),
            .delete(.invitation("i1")),
        ])).directory
        #expect(dir.assignmentLists.count == 4)
        #expect(Self.listUseErrors(dir).isEmpty)
        // The older snapshot still holds it, and answers through it.
        #expect(old.assignmentLists.count == 5)
        #expect(old.members["acme", "u2"]?.assignments.names == ["dev", "ci"])
        #expect(Self.listUseErrors(old).isEmpty)
        // Named again, it is made again.
        dir = try dir.applying(Self.lines([.member(.init(org: "acme", user: "u2", role: "member", assignments: ["dev", "ci"]))])).directory
        #expect(dir.assignmentLists.count == 5)
        #expect(dir.members["acme", "u2"]?.assignments.storage !== shared)
    }

    /// Two different lists with one hash are both held by the table: member entries hold
    /// their list without a reference count, so a list the table did not hold would be freed
    /// while members still point at it.
    @Test func listsWhoseHashesCollideAreBothHeld() throws {
        var table = NameListTable(shardBits: 2)
        let a = table.intern(["dev"], hash: 42)
        let b = table.intern(["billing"], hash: 42)
        #expect(table.count == 2)
        #expect(a != nil && b != nil && a?.storage !== b?.storage)
        #expect(b?.names == ["billing"])
        // Found again past the list that holds the hash, and counted.
        let found = table.intern(["billing"], hash: 42)
        #expect(found?.storage === b?.storage)
        let used = b.map { table.use($0) }
        #expect(used == true)
        table.release(a)
        var held: [(NameListStorage, Int)] = []
        table.forEach { list, uses in held.append((list.storage, uses)) }
        #expect(held.count == 1)
        #expect(held.first?.0 === b?.storage && held.first?.1 == 3)
        // With the hash's key free again, the names make a new list there (not shared, correct).
        let again = table.intern(["billing"], hash: 42)
        #expect(again?.storage !== b?.storage && again?.names == ["billing"])
        #expect(table.count == 2)
        for _ in 0..<3 { table.release(b) }
        #expect(table.count == 1)
    }

    /// Members whose records share one names array, as a store's load hands them, reuse the
    /// list resolved for it; a list dropped meanwhile is made again, and the use counts stay
    /// exact. The same records with arrays of their own build the same directory.
    @Test func membersSharingANamesArrayKeepUseCountsExact() throws {
        func records(_ dev: [String], _ devBilling: [String]) -> [Record] {
            [
                .org(.init(id: "acme")), .org(.init(id: "beta")),
                .member(.init(org: "acme", user: "u1", role: "member", assignments: dev)),
                .member(.init(org: "beta", user: "u1", role: "member", assignments: dev)),
                .member(.init(org: "acme", user: "u2", role: "member", assignments: devBilling)),
                // The last uses of `dev`'s list: the table drops it.
                .delete(.member(org: "acme", user: "u1")), .delete(.member(org: "beta", user: "u1")),
                .member(.init(org: "acme", user: "u3", role: "member", assignments: dev)),
                // Drops `devBilling`'s list, then names it again.
                .member(.init(org: "acme", user: "u2", role: "member", assignments: dev)),
                .member(.init(org: "beta", user: "u4", role: "member", assignments: devBilling)),
                .member(.init(org: "beta", user: "u5", role: "owner", assignments: devBilling)),
            ]
        }
        let dev = ["dev"], devBilling = ["dev", "billing"]
        let shared = try Directory.build(Self.lines(records(dev, devBilling)), policy: Self.policy)
        #expect(Self.listUseErrors(shared).isEmpty, "\(Self.listUseErrors(shared))")
        #expect(shared.assignmentLists.count == 2)
        let own = try Directory.build(Self.lines(records(["dev"], ["dev", "billing"]).map { r in
            guard case .member(var m) = r else { return r }
            m.assignments = m.assignments.map { String(decoding: Array($0.utf8), as: UTF8.self) }
            return .member(m)
        }), policy: Self.policy)
        #expect(Set(shared.records()) == Set(own.records()))
        #expect(Self.answers(shared) == Self.answers(own))
        // And through a batch applied to a snapshot, which shares the table.
        let next = try shared.applying(Self.lines([
            .member(.init(org: "acme", user: "u3", role: "member", assignments: devBilling)),
            .member(.init(org: "acme", user: "u2", role: "member", assignments: devBilling)),
            .member(.init(org: "acme", user: "u6", role: "member", assignments: dev)),
        ])).directory
        #expect(Self.listUseErrors(next).isEmpty, "\(Self.listUseErrors(next))")
        #expect(Self.listUseErrors(shared).isEmpty)
    }

    /// Readers of a snapshot (the request threads) never see what a writer derives from it,
    /// nor the release of the snapshots it drops.
    @Test func readersOfASnapshotSeeNothingOfAWriter() async throws {
        let base = try Directory.build(Self.lines(Self.base), policy: Self.policy)
        let expected = Self.answers(base)
        let wrong = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    var wrong = 0
                    for _ in 0..<20 where Self.answers(base) != expected { wrong += 1 }
                    return wrong
                }
            }
            group.addTask {
                for _ in 0..<20 {
                    var current = base
                    for batch in Self.batches { current = try current.applying(Self.lines(batch)).directory }
                }
                return 0
            }
            return try await group.reduce(0, +)
        }
        #expect(wrong == 0)
    }

    /// A map with payloads against a dictionary: inserts, rewrites of the payload (longer,
    /// shorter, empty), removals in the middle of probe chains, growth past the slot count,
    /// compaction of the dropped bytes, and snapshots of the map taken along the way.
    @Test func payloadMapAgreesWithADictionary() {
        var map = ByteMap<Int>(shardBits: 1, payloads: true)
        var model: [String: (Int, String)] = [:]
        var saved: [(ByteMap<Int>, [String: (Int, String)])] = []
        var rng = SplitMix64(seed: 7)
        for step in 0..<30_000 {
            let key = "key-\(rng.below(2_000))"
            switch rng.below(10) {
            case 0..<6:
                let payload = String(repeating: Character(UnicodeScalar(UInt8(97 + rng.below(26)))), count: rng.below(40))
                map.upsert(key, step, payload: payload)
                model[key] = (step, payload)
            case 6..<9:
                map.remove(key)
                model[key] = nil
            default:
                if step % 50 == 0 { saved.append((map, model)) }
            }
        }
        func errors(_ map: ByteMap<Int>, _ model: [String: (Int, String)]) -> Int {
            var wrong = map.count == model.count ? 0 : 1
            for i in 0..<2_000 {
                let key = "key-\(i)"
                let found = withBytes(key) { k in map.withEntry(k) { v, p in (copy v, String(decoding: p, as: UTF8.self)) } }
                if found?.0 != model[key]?.0 || found?.1 != model[key]?.1 { wrong += 1 }
            }
            var seen = 0
            map.forEachBytes { k, v, p in
                seen += 1
                let e = model[String(decoding: k, as: UTF8.self)]
                if e?.0 != v || e?.1 != String(decoding: p, as: UTF8.self) { wrong += 1 }
            }
            return wrong + (seen == model.count ? 0 : 1)
        }
        #expect(errors(map, model) == 0)
        #expect(saved.count > 10)
        for (old, oldModel) in saved { #expect(errors(old, oldModel) == 0) }
        // Fitted: shards held by a saved map are copied, the others give up their entries.
        map.shrinkToFit()
        #expect(errors(map, model) == 0)
        for (old, oldModel) in saved { #expect(errors(old, oldModel) == 0) }
    }

    /// Slots are rebuilt from stored keys, hashed as lookups hash them: the separator that
    /// splits a composite key is found eight bytes at a time. Every byte value before a
    /// separator at every position, against the plain search.
    @Test func separatorFoundAtEveryPositionAfterEveryByte() {
        var wrong: [String] = []
        for length in 1...24 {
            for position in 0..<length {
                for byte in UInt8(0)...UInt8(0xFF) where byte != 0x1F {
                    var bytes = Array(repeating: byte, count: length)
                    bytes[position] = 0x1F
                    if position + 1 < length { bytes[position + 1] = 0x1F }   // a second one after
                    let found = bytes.withUnsafeBytes { ByteHash.separatorIndex($0) }
                    if found != position { wrong.append("\(length) \(position) \(byte): \(found)") }
                }
            }
            let none = Array(repeating: UInt8(0x20), count: length)
            if none.withUnsafeBytes({ ByteHash.separatorIndex($0) }) != length { wrong.append("\(length) none") }
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(10))")
    }

    /// A replace (a large batch applied to an empty directory) reserves from totals and fits
    /// its shards after: it must hold what a build of the same records holds.
    @Test func aLargeReplaceHoldsWhatABuildHolds() throws {
        var records = Array(Self.base.prefix(6))   // the orgs and roles
        let lists: [[String]] = [[], ["dev"], ["dev", "ci"], ["ci"], ["billing", "ci", "bill"]]
        for u in 0..<5_000 {
            records.append(.user(.init(id: "user-\(u)", email: u % 3 == 0 ? nil : "User\(u)@X.io", emailVerified: u % 2 == 0)))
            records.append(.member(.init(org: "acme", user: "user-\(u)", role: u % 50 == 0 ? "owner" : "member",
                                         assignments: lists[u % lists.count])))
            if u % 4 == 0 {
                records.append(.apiKey(.init(id: "key-\(u)", org: "acme", user: "user-\(u)", permissions: ["read:billing"])))
            }
        }
        #expect(records.count > 10_000)
        let replaced = try Directory(policy: Self.policy).applying(Self.lines(records)).directory
        let built = try Directory.build(Self.lines(records), policy: Self.policy)
        #expect(Set(replaced.records()) == Set(records))
        #expect(Set(built.records()) == Set(records))
        #expect(Self.listUseErrors(replaced).isEmpty)
        for u in stride(from: 0, to: 5_000, by: 37) {
            for (action, resource) in [("read", "billing:b"), ("delete", "sandbox:s"), ("leave", "member:x")] {
                let subject = "user:user-\(u)"
                #expect(try replaced.reason(subject, action, resource) == built.reason(subject, action, resource))
            }
        }
        // It takes more batches like any other.
        let next = try replaced.applying(Self.lines([.delete(.user("user-1")), .member(.init(org: "beta", user: "user-2", role: "member"))])).directory
        #expect(next.counts.members == replaced.counts.members)
        #expect(Set(replaced.records()) == Set(records))
    }

    /// The streaming builder fits its shards when it finishes: records replaced along the
    /// way (payloads rewritten, lists released) must all come out as last sent.
    @Test func aBuilderWithReplacedRecordsFinishesWithTheLastOnes() throws {
        var expected = DirectoryBuilder.Expected()
        for r in Self.base { expected.count(r) }
        var builder = DirectoryBuilder(policy: Self.policy, expected: expected)
        let replaced: [Record] = [
            .user(.init(id: "u3", email: "Other3@X.IO", emailVerified: true)),
            .member(.init(org: "acme", user: "u1", role: "member", assignments: ["developer"])),
            .apiKey(.init(id: "k6", org: "acme", user: "u7", permissions: ["read:billing"])),
            .invitation(.init(id: "i1", org: "beta", email: "someone@x.io", role: "member", status: "pending")),
        ]
        for r in Self.base + replaced { builder.add(r) }
        let streamed = try builder.finish()
        let last = Dictionary(Self.base.map { ($0.key, $0) }, uniquingKeysWith: { $1 })
            .merging(replaced.map { ($0.key, $0) }, uniquingKeysWith: { $1 })
        #expect(Set(streamed.records()) == Set(last.values))
        #expect(Self.listUseErrors(streamed).isEmpty)
        // Every replaced key is one of the base's: in its place, the order still builds.
        let built = try Directory.build(Self.lines(Self.base.map { last[$0.key]! }), policy: Self.policy)
        #expect(Self.answers(streamed) == Self.answers(built))
    }
}
