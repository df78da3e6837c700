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

    /// A stream in store order (orgs, users, the rest) with errors in every part: `n` of each
    /// kind, so that with `n` large the 100 errors kept cut through the users' part.
    private static func storeOrder(errorsEach n: Int) -> [Record] {
        var out: [Record] = [.org(.init(id: "acme")), .org(.init(id: "solo", personal: true))]
        for i in 0..<n { out.append(.org(.init(id: "bad org \(i)"))) }
        for i in 0..<300 { out.append(.user(.init(id: "u\(i)", email: i % 3 == 0 ? nil : "U\(i)@X.io", emailVerified: i % 2 == 0))) }
        for i in 0..<n {
            out.append(.user(.init(id: "", email: nil, emailVerified: false)))
            out.append(.user(.init(id: "bad-email-\(i)", email: "a\u{1}b@x.io", emailVerified: true)))
        }
        // Upserted twice: the second wins, in either build.
        for i in 0..<5 { out.append(.user(.init(id: "u\(i)", email: "Again\(i)@x.io", emailVerified: false))) }
        out.append(.role(.init(org: "acme", id: "ci", permissions: ["write:sandboxes"])))
        for i in 0..<300 {
            out.append(.member(.init(org: i % 2 == 0 ? "acme" : "solo", user: "u\(i)", role: i % 7 == 0 ? "owner" : "member",
                                     assignments: i % 2 == 0 ? ["dev", "ci"] : ["billing"])))
        }
        for i in 0..<n {
            out.append(.member(.init(org: "ghost", user: "u\(i)", role: "member")))
            out.append(.member(.init(org: "acme", user: "u\(i)", role: "member", assignments: ["nope"])))
        }
        out.append(.apiKey(.init(id: "k1", org: "acme", user: "u2", permissions: ["write:sandboxes"])))
        out.append(.invitation(.init(id: "i1", org: "acme", email: "x@y.io", role: "member", assignments: ["ci"], status: "pending")))
        return out
    }

    /// The users built apart (`UsersBuilder`, as a store's load does on its reading thread)
    /// give the same directory, or the same errors in the same order (lines, fields, messages,
    /// the first 100 only), as the same stream through one builder.
    @Test(arguments: [0, 2, 40])
    func usersBuiltApartBuildTheSame(errorsEach n: Int) throws {
        let stream = Self.storeOrder(errorsEach: n)
        var whole = DirectoryBuilder(policy: Fixtures.policy)
        for (i, r) in stream.enumerated() { whole.add(r, line: i + 1) }
        var rest = DirectoryBuilder(policy: Fixtures.policy)
        var users = UsersBuilder()
        for (i, r) in stream.enumerated() {
            switch r {
            case .user(let u):
                users.add(u, line: i + 1)
            case .org:
                rest.add(r, line: i + 1)
            default:
                rest.placeUsers()
                rest.add(r, line: i + 1)
            }
        }
        let sequential = Result { () throws(DataErrors) in try whole.finish() }
        let apart = Result { () throws(DataErrors) in try rest.finish(users: users) }
        switch (sequential, apart) {
        case (.success(let a), .success(let b)):
            #expect(n == 0)
            #expect(a.counts == b.counts)
            #expect(b.counts.users == 300)
            #expect(Set(a.records()) == Set(b.records()))
            for subject in ["user:u0", "user:u1", "user:u7", "user:u299", "api_key:k1"] {
                for org in ["acme", "solo"] {
                    #expect(try a.reason(subject, "write", "sandbox:s", org: org) == b.reason(subject, "write", "sandbox:s", org: org))
                }
            }
        case (.failure(let a), .failure(let b)):
            #expect(n > 0)
            #expect(a.errors == b.errors)
            #expect(a.errors.count == min(5 * n, 100))
            // Every part is represented, in stream order.
            #expect(a.errors.first?.field == "id" && a.errors.first?.line == 3)
            #expect(b.errors.contains { $0.field == "email" })
            if n < 10 { #expect(b.errors.last?.field == "assignments[0]") }
        default:
            Issue.record("one build succeeded and the other failed: \(sequential) against \(apart)")
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
