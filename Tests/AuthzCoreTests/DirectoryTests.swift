import AuthzCore
import AuthzData
import Testing

/// acme: owner u1, developer u2 (through the `dev` alias), u3 with the custom role ci-bot,
/// api keys for u2 and u3, an open invitation.
private let base: [Record] = [
    .org(.init(id: "acme")),
    .org(.init(id: "other")),
    .user(.init(id: "u1", email: "one@x.io", emailVerified: true)),
    .user(.init(id: "u2", email: "two@x.io", emailVerified: true)),
    .user(.init(id: "u3", email: nil, emailVerified: false)),
    .role(.init(org: "acme", id: "ci-bot", permissions: ["delete:sandboxes"])),
    .member(.init(org: "acme", user: "u1", role: "owner")),
    .member(.init(org: "acme", user: "u2", role: "member", assignments: ["dev"])),
    .member(.init(org: "acme", user: "u3", role: "member", assignments: ["ci-bot"])),
    .member(.init(org: "other", user: "u2", role: "owner")),
    .apiKey(.init(id: "k2", org: "acme", user: "u2", permissions: ["write:sandboxes", "read:sandboxes"])),
    .apiKey(.init(id: "k3", org: "acme", user: "u3", permissions: ["delete:sandboxes"])),
    .invitation(.init(id: "inv1", org: "acme", email: "new@x.io", role: "member", assignments: ["developer"], status: "pending")),
]

/// orgs, users, members, roles, api keys, invitations.
private func sizes(_ dir: Directory) -> [Int] {
    let c = dir.counts
    return [c.orgs, c.users, c.members, c.roles, c.apiKeys, c.invitations]
}

private func directory() throws -> Directory { try Fixtures.build(base) }

private func apply(_ dir: Directory, _ records: Record...) throws -> Directory {
    try dir.applying(Fixtures.lines(records)).directory
}

@Suite struct DirectoryTests {
    @Test func buildsAndCounts() throws {
        let dir = try directory()
        #expect(sizes(dir) == [2, 3, 4, 1, 2, 1])
        #expect(try dir.reason("user:u2", "write", "sandbox:s1") == .assignment)
        #expect(try dir.reason("user:u3", "read", "sandbox:s1") == .assignment)   // implied viewer
        #expect(try dir.reason("user:u3", "write", "sandbox:s1") == .missingPermission)
        #expect(try dir.reason("user:u1", "delete", "sandbox:s1") == .owner)
        #expect(try dir.reason("user:u1", "list", "member:u1", org: "other") == .notMember)
    }

    @Test func upsertReplacesTheWholeRecord() throws {
        var dir = try directory()
        dir = try apply(dir, .member(.init(org: "acme", user: "u2", role: "member")))
        #expect(try dir.reason("user:u2", "write", "sandbox:s1") == .missingPermission)
        #expect(try dir.reason("user:u2", "read", "sandbox:s1") == .assignment)
        #expect(dir.counts.members == 4)

        dir = try apply(dir, .org(.init(id: "acme", suspended: true)))
        #expect(try dir.reason("user:u1", "update", "org:acme") == .orgSuspended)
        dir = try apply(dir, .org(.init(id: "acme")))
        #expect(try dir.reason("user:u1", "update", "org:acme") == .owner)
        // Replacing the org kept its members and its owner count.
        #expect(try dir.reason("user:u1", "leave", "member:u1") == .lastOwner)
        #expect(dir.counts.members == 4)
    }

    @Test func suspensionEndsAtItsTime() throws {
        let dir = try apply(try directory(),
                            .org(.init(id: "acme", suspended: true, suspendedUntil: Timestamp(rfc3339: "2026-05-01T00:00:00Z")!)))
        #expect(try dir.reason("user:u1", "update", "org:acme") == .owner)
        let later = try apply(dir,
                              .org(.init(id: "acme", suspended: true, suspendedUntil: Timestamp(rfc3339: "2026-07-01T00:00:00Z")!)))
        #expect(try later.reason("user:u1", "update", "org:acme") == .orgSuspended)
    }

    @Test func deletingWhatIsMissingIsNotAnError() throws {
        let dir = try directory()
        let (next, stats) = try dir.applying(Fixtures.lines([
            .delete(.org("nope")), .delete(.user("nope")), .delete(.member(org: "acme", user: "nope")),
            .delete(.member(org: "nope", user: "u1")), .delete(.role(org: "acme", id: "nope")),
            .delete(.apiKey("nope")), .delete(.invitation("nope")),
        ]))
        #expect(stats.deleted == 7)
        #expect(next.counts == dir.counts)
    }

    @Test func orgDeleteCascades() throws {
        let dir = try apply(try directory(), .delete(.org("acme")))
        #expect(sizes(dir) == [1, 3, 1, 0, 0, 0])
        #expect(try dir.reason("user:u1", "list", "member:u1") == .notMember)
        #expect(try dir.reason("api_key:k2", "read", "sandbox:s1") == .unknownKey)
        #expect(try dir.reason("user:u2", "list", "member:u2", org: "other") == .membership)
        // A new org with the same id starts empty: no stale counts or roles.
        let again = try apply(dir, .org(.init(id: "acme")), .member(.init(org: "acme", user: "u2", role: "owner")))
        #expect(try again.reason("user:u2", "leave", "member:u2") == .lastOwner)
        #expect(Fixtures.errors(applying: [.member(.init(org: "acme", user: "u3", role: "member", assignments: ["ci-bot"]))],
                                to: again).map(\.field) == ["assignments[0]"])
    }

    @Test func userDeleteRemovesMembershipsAndKeysAndOwnerCounts() throws {
        var dir = try apply(try directory(), .member(.init(org: "acme", user: "u2", role: "owner")))
        #expect(try dir.reason("user:u1", "leave", "member:u1") == .membership)
        dir = try apply(dir, .delete(.user("u2")))
        #expect(sizes(dir) == [2, 2, 2, 1, 1, 1])
        #expect(try dir.reason("user:u1", "leave", "member:u1") == .lastOwner)
        #expect(try dir.reason("user:u2", "list", "member:u2", org: "other") == .notMember)
        #expect(try dir.reason("api_key:k2", "read", "sandbox:s1") == .unknownKey)
    }

    @Test func userDeleteUnassignsCustomRoles() throws {
        var dir = try directory()
        #expect(Fixtures.errors(applying: [.delete(.role(org: "acme", id: "ci-bot"))], to: dir).count == 1)
        dir = try apply(dir, .delete(.user("u3")))
        dir = try apply(dir, .delete(.role(org: "acme", id: "ci-bot")))
        #expect(dir.counts.roles == 0)
    }

    // MARK: Refused records

    @Test func memberOfUnknownOrg() throws {
        let errors = Fixtures.errors(applying: [
            .user(.init(id: "u9", email: nil, emailVerified: false)),
            .member(.init(org: "ghost", user: "u9", role: "member")),
        ], to: try directory())
        #expect(errors.map(\.line) == [2])
        #expect(errors.map(\.field) == ["org"])
        #expect(errors.first?.message == "unknown org `ghost`")
    }

    @Test func unknownAssignmentNamesItsIndex() throws {
        let errors = Fixtures.errors(applying: [
            .member(.init(org: "acme", user: "u9", role: "member", assignments: ["developer", "ci-bot", "ops"])),
            // ci-bot is a custom role of acme, not of other.
            .member(.init(org: "other", user: "u9", role: "member", assignments: ["ci-bot"])),
            .invitation(.init(id: "inv9", org: "acme", email: "a@x.io", role: "member", assignments: ["dev", "x"], status: "pending")),
        ], to: try directory())
        #expect(errors.map(\.line) == [1, 2, 3])
        #expect(errors.map(\.field) == ["assignments[2]", "assignments[0]", "assignments[1]"])
        #expect(errors[0].message.hasPrefix("unknown assignment `ops`"))
    }

    /// Repeated custom role names count once, in time linear in their number (a member with
    /// 40k took 3.7 s to load, pairwise). The bound on how many a record carries is the
    /// decoders' (RecordCodecTests): a directory, loaded from a store written before it, takes more.
    @Test func repeatedAssignmentsCountOnceAndAStoreCanHoldMany() throws {
        let many = Array(repeating: "ci-bot", count: 300) + ["dev"]
        let ok = try apply(try directory(), .member(.init(org: "acme", user: "u9", role: "member", assignments: many)))
        #expect(try ok.check(CheckRequest(subject: "user:u9", action: "delete", resource: "sandbox:s", org: "acme"),
                             now: Timestamp(seconds: 0)).allowed)
        #expect(ok.records().contains(.member(.init(org: "acme", user: "u9", role: "member", assignments: many))))
    }

    /// Past 16 distinct custom roles the repeats are found through a set: each role counts once.
    @Test func manyDistinctCustomRolesCountOnceEach() throws {
        var dir = try directory()
        let roles = (0..<20).map { "r\($0)" }
        for r in roles { dir = try apply(dir, .role(.init(org: "acme", id: r, permissions: r == "r19" ? ["delete:sandboxes"] : ["read:sandboxes"]))) }
        dir = try apply(dir, .member(.init(org: "acme", user: "u9", role: "member", assignments: roles + roles)))
        #expect(try dir.check(CheckRequest(subject: "user:u9", action: "delete", resource: "sandbox:s", org: "acme"),
                              now: Timestamp(seconds: 0)).allowed)
        // Each role is held once: removing the member frees every one of them for deletion.
        dir = try apply(dir, .delete(.member(org: "acme", user: "u9")))
        for r in roles { dir = try apply(dir, .delete(.role(org: "acme", id: r))) }
        #expect(dir.counts.roles == 1)
    }

    /// An invalid id is quoted in its error with control characters escaped and at most 64
    /// characters (a 10 KB id is not sent back whole).
    @Test func anInvalidIdIsQuotedEscapedAndClipped() throws {
        let long = String(repeating: "x", count: 10_000)
        let errors = Fixtures.errors(applying: [
            .org(.init(id: "a\u{0}b\u{1F}c")),
            .org(.init(id: long)),
        ], to: try directory())
        #expect(errors.map(\.message) == [
            "`a\\u{0}b\\u{1f}c` is not a valid id (no spaces or control characters, at most 512 bytes)",
            "`\(String(repeating: "x", count: 64))...(10000 bytes)` is not a valid id (no spaces or control characters, at most 512 bytes)",
        ])
    }

    @Test func unknownPermissionNamesItsIndex() throws {
        let errors = Fixtures.errors(applying: [
            .role(.init(org: "acme", id: "auditor", permissions: ["read:billing", "read:secrets"])),
            .apiKey(.init(id: "k9", org: "acme", user: "u1", permissions: ["fly"])),
        ], to: try directory())
        #expect(errors.map(\.line) == [1, 2])
        #expect(errors.map(\.field) == ["permissions[1]", "permissions[0]"])
        #expect(errors.map(\.message) == ["unknown permission `read:secrets`", "unknown permission `fly`"])
    }

    @Test(arguments: ["developer", "dev", "viewer"])
    func roleIdCannotBeAGlobalAssignmentName(id: String) throws {
        let errors = Fixtures.errors(applying: [.role(.init(org: "acme", id: id, permissions: ["read:billing"]))],
                                     to: try directory())
        #expect(errors.map(\.field) == ["id"])
    }

    @Test func roleNeedsAPermission() throws {
        let errors = Fixtures.errors(applying: [.role(.init(org: "acme", id: "empty", permissions: []))], to: try directory())
        #expect(errors.map(\.field) == ["permissions"])
    }

    @Test func roleStillAssignedCannotBeDeleted() throws {
        let dir = try directory()
        let errors = Fixtures.errors(applying: [.delete(.role(org: "acme", id: "ci-bot"))], to: dir)
        #expect(errors.map(\.description) == [
            "line 1: field `id`: custom role `ci-bot` of org `acme` is still assigned to 1 member; update them first",
        ])
        // Once no member holds it, it goes.
        let next = try apply(dir, .member(.init(org: "acme", user: "u3", role: "member")), .delete(.role(org: "acme", id: "ci-bot")))
        #expect(next.counts.roles == 0)
    }

    /// An invitation offering a custom role keeps it too: deleting the role would leave an
    /// invitation that `records()` could no longer rebuild.
    @Test func roleStillOfferedByAnInvitationCannotBeDeleted() throws {
        var dir = try apply(try directory(),
                            .member(.init(org: "acme", user: "u3", role: "member")),
                            .invitation(.init(id: "inv2", org: "acme", email: "c@x.io", role: "member", assignments: ["ci-bot"], status: "pending")))
        let errors = Fixtures.errors(applying: [.delete(.role(org: "acme", id: "ci-bot"))], to: dir)
        #expect(errors.map(\.description) == [
            "line 1: field `id`: custom role `ci-bot` of org `acme` is still offered by 1 invitation; update or delete them first",
        ])
        // Replacing the invitation without the role releases it.
        dir = try apply(dir, .invitation(.init(id: "inv2", org: "acme", email: "c@x.io", role: "member", status: "declined")),
                        .delete(.role(org: "acme", id: "ci-bot")))
        #expect(dir.counts.roles == 0)
        #expect(try Directory.build(Fixtures.lines(dir.records()), policy: Fixtures.policy).counts == dir.counts)
    }

    @Test func invitationDeleteReleasesItsRoles() throws {
        var dir = try apply(try directory(),
                            .member(.init(org: "acme", user: "u3", role: "member")),
                            .invitation(.init(id: "inv2", org: "acme", email: "c@x.io", role: "member", assignments: ["ci-bot"], status: "pending")))
        dir = try apply(dir, .delete(.invitation("inv2")), .delete(.role(org: "acme", id: "ci-bot")))
        #expect(dir.counts.roles == 0)
    }

    @Test func invalidInvitationStatus() throws {
        let errors = Fixtures.errors(applying: [
            .invitation(.init(id: "inv9", org: "acme", email: "a@x.io", role: "member", status: "open")),
        ], to: try directory())
        #expect(errors.map(\.field) == ["status"])
        #expect(errors.first?.message.hasPrefix("unknown status `open`") == true)
    }

    @Test func aBatchWithAnErrorChangesNothingAndReportsEveryError() throws {
        let dir = try directory()
        let before = dir.counts
        let batch: [Record] = [
            .delete(.org("acme")),                                                  // fine on its own
            .member(.init(org: "other", user: "u1", role: "boss")),                 // 2: role
            .user(.init(id: "u7", email: nil, emailVerified: false)),               // fine
            .apiKey(.init(id: "k7", org: "other", user: "u7", permissions: ["x"])),  // 4: permissions[0]
            .member(.init(org: "other", user: "bad id", role: "member")),           // 5: user
        ]
        let errors = Fixtures.errors(applying: batch, to: dir)
        #expect(errors.map(\.line) == [2, 4, 5])
        #expect(errors.map(\.field) == ["role", "permissions[0]", "user"])
        #expect(dir.counts == before)
        #expect(try dir.reason("user:u1", "delete", "sandbox:s1") == .owner)
        #expect(try dir.reason("api_key:k2", "write", "sandbox:s1") == .apiKey)
    }

    @Test func laterRecordsSeeEarlierOnesOfTheSameBatch() throws {
        let dir = try apply(Directory(policy: Fixtures.policy),
                            .org(.init(id: "new")),
                            .role(.init(org: "new", id: "r", permissions: ["read:billing"])),
                            .member(.init(org: "new", user: "u1", role: "member", assignments: ["r"])))
        #expect(try dir.reason("user:u1", "read", "billing:b", org: "new") == .assignment)
    }

    // MARK: records()

    @Test func recordsRebuildTheSameDirectory() throws {
        let dir = try apply(try directory(),
                            .org(.init(id: "acme", personal: false, suspended: true,
                                       suspendedUntil: Timestamp(rfc3339: "2027-01-01T00:00:00Z")!)),
                            .apiKey(.init(id: "k4", org: "other", user: "u2", permissions: [],
                                          expiresAt: Timestamp(rfc3339: "2026-01-01T00:00:00Z")!)))
        // Through JSON Lines, as an export and a reload would go.
        let (decoded, errors) = RecordCodec.decodeLines(RecordCodec.encodeLines(dir.records()))
        #expect(errors.isEmpty)
        let rebuilt = try Directory.build(decoded, policy: Fixtures.policy)
        #expect(rebuilt.counts == dir.counts)
        #expect(Set(rebuilt.records()) == Set(dir.records()))

        let subjects = ["user:u1", "user:u2", "user:u3", "user:u9", "api_key:k2", "api_key:k3", "api_key:k4", "api_key:k9"]
        let requests: [(String, String)] = [
            ("read", "sandbox:s"), ("write", "sandbox:s"), ("delete", "sandbox:s"), ("read", "billing:b"),
            ("list", "member:u1"), ("leave", "member:u1"), ("update", "org:acme"),
        ]
        for org in ["acme", "other", "ghost"] {
            for s in subjects {
                for (action, resource) in requests {
                    #expect(try rebuilt.reason(s, action, resource, org: org) == dir.reason(s, action, resource, org: org),
                            "\(s) \(action) \(resource) in \(org)")
                }
            }
        }
    }

    /// Ids are compared as bytes everywhere (two ids that are canonically equivalent Unicode
    /// are still two ids): deleting one must not cascade into the other.
    @Test func cascadesCompareIdsAsBytes() throws {
        let composed = "caf\u{E9}", decomposed = "cafe\u{301}"
        var dir = try apply(Directory(policy: Fixtures.policy),
                            .org(.init(id: "acme")), .org(.init(id: composed)), .org(.init(id: decomposed)),
                            .member(.init(org: composed, user: "u1", role: "owner")),
                            .member(.init(org: decomposed, user: "u1", role: "owner")),
                            .member(.init(org: "acme", user: composed, role: "owner")),
                            .member(.init(org: "acme", user: decomposed, role: "owner")),
                            .apiKey(.init(id: "k1", org: decomposed, user: "u1", permissions: [])))
        #expect(dir.counts.orgs == 3)
        dir = try apply(dir, .delete(.org(composed)), .delete(.user(composed)))
        #expect(dir.counts.members == 2)
        #expect(dir.counts.apiKeys == 1)
        #expect(try dir.reason("user:u1", "list", "member:u1", org: decomposed) == .membership)
        #expect(try dir.reason("user:\(decomposed)", "leave", "member:x", org: "acme") == .lastOwner)
    }

    // MARK: Decisions with custom roles and keys

    @Test func aRolePermissionChangeAppliesAtOnceToItsMembers() throws {
        var dir = try directory()
        #expect(try dir.reason("user:u3", "delete", "sandbox:s") == .assignment)
        #expect(try dir.reason("user:u3", "read", "billing:b") == .missingPermission)
        dir = try apply(dir, .role(.init(org: "acme", id: "ci-bot", permissions: ["read:billing"])))
        #expect(try dir.reason("user:u3", "delete", "sandbox:s") == .missingPermission)
        #expect(try dir.reason("user:u3", "read", "billing:b") == .assignment)
        // The role is still held: replacing it kept its member count.
        #expect(Fixtures.errors(applying: [.delete(.role(org: "acme", id: "ci-bot"))], to: dir).count == 1)
    }

    @Test func apiKeyHoldsItsPermissionsIntersectedWithItsUsers() throws {
        var dir = try directory()
        #expect(try dir.reason("api_key:k2", "write", "sandbox:s") == .apiKey)
        #expect(try dir.reason("api_key:k2", "delete", "sandbox:s") == .missingPermission) // not the key's
        #expect(try dir.reason("api_key:k3", "delete", "sandbox:s") == .apiKey)           // via custom role
        #expect(try dir.reason("api_key:k3", "read", "sandbox:s") == .missingPermission)  // user's, not the key's
        // u2 demoted: the key keeps its list but loses what its user lost.
        dir = try apply(dir, .member(.init(org: "acme", user: "u2", role: "member")))
        #expect(try dir.reason("api_key:k2", "write", "sandbox:s") == .missingPermission)
        #expect(try dir.reason("api_key:k2", "read", "sandbox:s") == .apiKey)
        // u3's role loses the permission: so does u3's key.
        dir = try apply(dir, .role(.init(org: "acme", id: "ci-bot", permissions: ["read:billing"])))
        #expect(try dir.reason("api_key:k3", "delete", "sandbox:s") == .missingPermission)
    }

    /// Many members in few orgs, so that the map's shards fill up and collide; then deletes
    /// of members and of users (which remove entries from the middle of probe chains), then
    /// re-inserts: every membership must answer as the plain set of expected pairs says.
    @Test func manyDeletesKeepEveryOtherMemberReachable() throws {
        let orgs = (0..<8).map { "org-\($0)" }
        let users = (0..<4_000).map { "user-\($0)-0123456789abcdef" }
        var records: [Record] = orgs.map { .org(.init(id: $0)) }
        var expected = Set<String>()
        for (u, user) in users.enumerated() {
            for (o, org) in orgs.enumerated() where (u + o) % 3 != 0 {
                records.append(.member(.init(org: org, user: user, role: "member")))
                expected.insert(org + " " + user)
            }
        }
        var dir = try Fixtures.build(records)
        var batch: [Record] = []
        for (u, user) in users.enumerated() {
            if u % 7 == 0 {
                batch.append(.delete(.user(user)))
                for org in orgs { expected.remove(org + " " + user) }
            } else if u % 2 == 0 {
                let org = orgs[u % orgs.count]
                batch.append(.delete(.member(org: org, user: user)))
                expected.remove(org + " " + user)
            }
        }
        dir = try dir.applying(Fixtures.lines(batch)).directory
        #expect(dir.counts.members == expected.count)
        // Put a few back.
        var again: [Record] = []
        for user in users.prefix(300) {
            again.append(.member(.init(org: orgs[0], user: user, role: "member")))
            expected.insert(orgs[0] + " " + user)
        }
        dir = try dir.applying(Fixtures.lines(again)).directory
        #expect(dir.counts.members == expected.count)
        var wrong = 0
        for org in orgs {
            for user in users {
                let member = try dir.reason("user:" + user, "list", "member:x", org: org) != .notMember
                if member != expected.contains(org + " " + user) { wrong += 1 }
            }
        }
        #expect(wrong == 0)
        #expect(dir.records().count == orgs.count + expected.count)
    }

    /// `Identifier.isValid` reads eight bytes at a time: every position of a long id, every
    /// byte value, against the plain definition.
    @Test func identifierValidityAtEveryPositionAndByte() {
        var wrong: [String] = []
        for length in [1, 7, 8, 9, 15, 16, 17, 36] {
            for position in 0..<length {
                for byte in UInt8(0)...UInt8(0x7F) {
                    var bytes = Array(repeating: UInt8(ascii: "a"), count: length)
                    bytes[position] = byte
                    let id = String(decoding: bytes, as: UTF8.self)
                    let expected = byte > 0x20 && byte != 0x7F
                    if Identifier.isValid(id) != expected { wrong.append("\(length) \(position) \(byte)") }
                }
            }
        }
        #expect(wrong.isEmpty)
        #expect(Identifier.isValid("org-é-ü-0123456789"))
        #expect(!Identifier.isValid(""))
        #expect(!Identifier.isValid(String(repeating: "a", count: 513)))
        #expect(Identifier.isValid(String(repeating: "a", count: 512)))
    }
}
