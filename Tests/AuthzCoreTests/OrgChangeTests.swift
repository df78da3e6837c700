import AuthzCore
import Testing

/// Org-level changes (suspension, personal, deletion) reach the decision of every member of
/// the org after `applying`, whatever shard the member's entry sits in, and never an older
/// snapshot. The check path reads the org only for the conditions that need it: these hold it
/// to what a lookup of the org first would answer.
@Suite struct OrgChangeTests {
    static let policy = try! CompiledPolicy(PolicyDefinition(
        name: "org-changes",
        permissions: ["write:sandboxes"],
        assignments: [.init(name: "developer", permissions: ["write:sandboxes"]), .init(name: "viewer", permissions: [])],
        impliedAssignment: "viewer",
        resourceTypes: [
            .init(name: "sandbox", actions: [
                .init(name: "read", requirement: .member),
                .init(name: "create", requirement: .anyOf(["write:sandboxes"]), conditions: [.notSuspended]),
            ]),
            .init(name: "organization", actions: [
                .init(name: "delete", requirement: .owner, conditions: [.sessionOnly, .notPersonal]),
                .init(name: "leave", requirement: .member, conditions: [.notLastOwner], target: .subject),
            ]),
            .init(name: "invitation", actions: [
                .init(name: "accept", requirement: .invitee, conditions: [.sessionOnly, .invitee]),
            ]),
        ]))

    static let now = Timestamp(rfc3339: "2026-06-01T00:00:00Z")!
    /// More members than shards of a small map, so they spread over many shards.
    static let users = (0..<600).map { "user-\($0)-0b7f1c2e-5d4a-4e61-9c39-3a1f2b4c5d6e" }

    static func records() -> [Record] {
        var r: [Record] = [
            .org(.init(id: "big")),
            .org(.init(id: "small")),
            .user(.init(id: "guest", email: "guest@x.io", emailVerified: true)),
            .member(.init(org: "big", user: "boss", role: "owner")),
            .member(.init(org: "small", user: "boss", role: "owner")),
            .invitation(.init(id: "inv", org: "big", email: "guest@x.io", role: "member", status: "pending")),
        ]
        for u in users { r.append(.member(.init(org: "big", user: u, role: "member", assignments: ["developer"]))) }
        return r
    }

    static func apply(_ dir: Directory, _ records: Record...) throws -> Directory {
        try dir.applying(records.enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }).directory
    }

    /// The reasons of `action` on `resource` in `org` for every member of `big` and the owner.
    static func reasons(_ dir: Directory, _ action: String, _ resource: String, org: String = "big") throws -> Set<Reason> {
        var out = Set<Reason>()
        for u in users + ["boss"] {
            out.insert(try dir.check(subject: "user:" + u, action: action, resource: resource, org: org, now: now).reason)
        }
        return out
    }

    @Test func suspensionReachesEveryMemberAndNoOlderSnapshot() throws {
        let dir = try Directory.build(Self.records().enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }, policy: Self.policy)
        #expect(try Self.reasons(dir, "create", "sandbox:s") == [.assignment, .owner])

        let suspended = try Self.apply(dir, .org(.init(id: "big", suspended: true)))
        #expect(try Self.reasons(suspended, "create", "sandbox:s") == [.orgSuspended])
        #expect(try Self.reasons(suspended, "read", "sandbox:s") == [.membership])
        // Another org of the same owner is not suspended; the older snapshot is unchanged.
        #expect(try suspended.check(subject: "user:boss", action: "create", resource: "sandbox:s", org: "small", now: Self.now).reason == .owner)
        #expect(try Self.reasons(dir, "create", "sandbox:s") == [.assignment, .owner])

        // A suspension whose end has passed is over; one still running is not.
        let ended = try Self.apply(suspended, .org(.init(id: "big", suspended: true, suspendedUntil: Timestamp(rfc3339: "2026-05-01T00:00:00Z")!)))
        #expect(try Self.reasons(ended, "create", "sandbox:s") == [.assignment, .owner])
        let running = try Self.apply(ended, .org(.init(id: "big", suspended: true, suspendedUntil: Timestamp(rfc3339: "2026-07-01T00:00:00Z")!)))
        #expect(try Self.reasons(running, "create", "sandbox:s") == [.orgSuspended])
        let lifted = try Self.apply(running, .org(.init(id: "big")))
        #expect(try Self.reasons(lifted, "create", "sandbox:s") == [.assignment, .owner])
    }

    @Test func personalAndOwnerCountReachTheConditions() throws {
        let dir = try Directory.build(Self.records().enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }, policy: Self.policy)
        func boss(_ d: Directory, _ action: String, _ resource: String) throws -> Reason {
            try d.check(subject: "user:boss", action: action, resource: resource, org: "big", now: Self.now).reason
        }
        #expect(try boss(dir, "delete", "organization:big") == .owner)
        #expect(try boss(dir, "leave", "organization:big") == .lastOwner)
        let personal = try Self.apply(dir, .org(.init(id: "big", personal: true)))
        #expect(try boss(personal, "delete", "organization:big") == .personalOrg)
        #expect(try boss(dir, "delete", "organization:big") == .owner)
        // A second owner: the first may leave.
        let two = try Self.apply(personal, .member(.init(org: "big", user: Self.users[0], role: "owner")))
        #expect(try boss(two, "leave", "organization:big") == .membership)
        #expect(try boss(personal, "leave", "organization:big") == .lastOwner)
    }

    @Test func aDeletedOrgHasNoMembersNorInvitees() throws {
        let dir = try Directory.build(Self.records().enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }, policy: Self.policy)
        func accept(_ d: Directory, org: String = "big") throws -> Reason {
            try d.check(subject: "user:guest", action: "accept", resource: "invitation:inv", org: org, now: Self.now).reason
        }
        #expect(try accept(dir) == .invitee)
        #expect(try accept(dir, org: "small") == .notInvitee)
        #expect(try accept(dir, org: "nowhere") == .notInvitee)
        // Not a member of `small`, which exists; nor of an org that does not.
        #expect(try dir.check(subject: "user:" + Self.users[0], action: "read", resource: "sandbox:s", org: "small", now: Self.now).reason == .notMember)
        #expect(try dir.check(subject: "user:" + Self.users[0], action: "read", resource: "sandbox:s", org: "nowhere", now: Self.now).reason == .notMember)

        let deleted = try Self.apply(dir, .delete(.org("big")))
        #expect(try Self.reasons(deleted, "read", "sandbox:s") == [.notMember])
        #expect(try Self.reasons(deleted, "create", "sandbox:s") == [.notMember])
        #expect(try Self.reasons(deleted, "leave", "organization:big") == [.notMember])
        #expect(try accept(deleted) == .notInvitee)
        // Back, empty: still no members, and the invitation went with the org.
        let back = try Self.apply(deleted, .org(.init(id: "big")))
        #expect(try Self.reasons(back, "create", "sandbox:s") == [.notMember])
        #expect(try accept(back) == .notInvitee)
        let invited = try Self.apply(back, .invitation(.init(id: "inv", org: "big", email: "GUEST@x.io", role: "member", status: "pending")))
        #expect(try accept(invited) == .invitee)
        // The older snapshot still answers as it did.
        #expect(try Self.reasons(dir, "read", "sandbox:s") == [.membership])
    }

    /// A member's facts are read from next to its key (its slot points there): every rewrite
    /// of a member (role or assignments changed, deleted and added again), over many batches
    /// whose copies compact the key bytes, must move what the check reads with it, and leave
    /// every older snapshot answering as it did.
    @Test func rewrittenMembersAnswerFromTheirNewFactsInEverySnapshot() throws {
        enum State: Equatable { case developer, plain, owner, absent }
        func expected(_ s: State) -> Reason {
            switch s {
            case .developer: .assignment
            case .plain: .missingPermission
            case .owner: .owner
            case .absent: .notMember
            }
        }
        var state: [String: State] = [:]
        var records: [Record] = [.org(.init(id: "big")), .member(.init(org: "big", user: "boss", role: "owner"))]
        for (i, u) in Self.users.enumerated() {
            state[u] = i % 2 == 0 ? .developer : .plain
            records.append(.member(.init(org: "big", user: u, role: "member", assignments: i % 2 == 0 ? ["developer"] : [])))
        }
        var dir = try Directory.build(records.enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }, policy: Self.policy)
        var snapshots: [(Directory, [String: State])] = [(dir, state)]
        for round in 0..<12 {
            var batch: [Record] = []
            for (i, u) in Self.users.enumerated() where (i + round) % 3 == 0 {
                let next: State = switch (i + round) % 4 {
                case 0: state[u] == .absent ? .plain : .absent
                case 1: .owner
                case 2: .developer
                default: .plain
                }
                switch next {
                case .absent: batch.append(.delete(.member(org: "big", user: u)))
                case .owner: batch.append(.member(.init(org: "big", user: u, role: "owner")))
                case .developer: batch.append(.member(.init(org: "big", user: u, role: "member", assignments: ["developer"])))
                case .plain: batch.append(.member(.init(org: "big", user: u, role: "member")))
                }
                state[u] = next
            }
            dir = try Self.apply(dir, batch)
            snapshots.append((dir, state))
        }
        for (snapshot, states) in snapshots {
            for u in Self.users {
                let r = try snapshot.check(subject: "user:" + u, action: "create", resource: "sandbox:s", org: "big", now: Self.now).reason
                #expect(r == expected(states[u]!), "\(u): \(r) in a snapshot where it is \(states[u]!)")
            }
        }
    }

    static func apply(_ dir: Directory, _ records: [Record]) throws -> Directory {
        try dir.applying(records.enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }).directory
    }

    /// The records after an org's deletion cannot name it, however they are applied: in one
    /// batch, in a build, or streamed through a builder (each remembers the org of the record
    /// before, to skip its lookup).
    @Test func recordsAfterAnOrgsDeletionCannotNameIt() throws {
        let records: [Record] = [
            .org(.init(id: "acme")),
            .member(.init(org: "acme", user: "u1", role: "owner")),
            .delete(.org("acme")),
            .member(.init(org: "acme", user: "u2", role: "member")),
            .role(.init(org: "acme", id: "r", permissions: ["write:sandboxes"])),
        ]
        let located = records.enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }
        func describe(_ e: DataErrors) -> [String] { e.errors.map { "\($0.line) \($0.field ?? "-") \($0.message)" } }
        let expected = ["4 org unknown org `acme`", "5 org unknown org `acme`"]
        do {
            _ = try Directory.build(located, policy: Self.policy)
            Issue.record("the build accepted members of a deleted org")
        } catch {
            #expect(describe(error) == expected)
        }
        do {
            _ = try Directory(policy: Self.policy).applying(located)
            Issue.record("the batch accepted members of a deleted org")
        } catch {
            #expect(describe(error) == expected)
        }
        var builder = DirectoryBuilder(policy: Self.policy)
        for r in located { builder.add(r.record, line: r.line) }
        do {
            _ = try builder.finish()
            Issue.record("the builder accepted members of a deleted org")
        } catch {
            #expect(describe(error) == expected)
        }
    }
}
