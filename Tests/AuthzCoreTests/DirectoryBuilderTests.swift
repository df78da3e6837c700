import AuthzCore
import Testing

/// The streaming builder (start-up from a store) must build exactly what `Directory.build`
/// builds from the same records, and refuse what it refuses.
@Suite struct DirectoryBuilderTests {
    private let records: [Record] = [
        .org(.init(id: "acme")),
        .org(.init(id: "solo", personal: true)),
        .user(.init(id: "u1", email: "U1@X.io", emailVerified: true)),
        .member(.init(org: "acme", user: "u1", role: "owner")),
        .member(.init(org: "acme", user: "u2", role: "member", assignments: ["dev"])),
        .member(.init(org: "solo", user: "u2", role: "owner")),
        .apiKey(.init(id: "k1", org: "acme", user: "u2", permissions: ["write:sandboxes"])),
    ]

    @Test(arguments: [false, true])
    func buildsWhatBuildBuilds(presized: Bool) throws {
        var expected = DirectoryBuilder.Expected()
        if presized {
            expected.orgs = 2
            expected.orgKeyBytes = 8
            expected.members = 3
            expected.memberKeyBytes = 3 * 7
        }
        var builder = DirectoryBuilder(policy: Fixtures.policy, expected: expected)
        for (i, r) in records.enumerated() { builder.add(r, line: i + 1) }
        let streamed = try builder.finish()
        let built = try Fixtures.build(records)
        #expect(streamed.counts == built.counts)
        #expect(Set(streamed.records()) == Set(built.records()))
        for subject in ["user:u1", "user:u2", "user:u3", "api_key:k1"] {
            for (action, resource) in [("read", "sandbox:s"), ("write", "sandbox:s"), ("leave", "member:u1")] {
                for org in ["acme", "solo"] {
                    #expect(try streamed.reason(subject, action, resource, org: org) == built.reason(subject, action, resource, org: org))
                }
            }
        }
    }

    @Test func refusesWithEveryErrorAndItsLine() {
        var builder = DirectoryBuilder(policy: Fixtures.policy)
        builder.add(.org(.init(id: "acme")), line: 1)
        builder.add(.member(.init(org: "ghost", user: "u1", role: "member")), line: 2)
        builder.add(.member(.init(org: "acme", user: "u1", role: "member", assignments: ["nope"])), line: 3)
        do {
            _ = try builder.finish()
            Issue.record("an invalid stream was accepted")
        } catch {
            #expect(error.errors.map(\.line) == [2, 3])
            #expect(error.errors.map(\.field) == ["org", "assignments[0]"])
        }
    }
}
