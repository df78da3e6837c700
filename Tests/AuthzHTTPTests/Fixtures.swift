import AuthzCore
@testable import AuthzHTTP
import Synchronization

/// A small Daytona-like policy, built in code.
enum Fixtures {
    /// `deleteRequirement` lets two variants differ in one observable answer.
    static func definition(name: String = "daytona-test", deleteRequirement: PolicyDefinition.RequirementName = .anyOf(["delete:sandboxes"])) -> PolicyDefinition {
        PolicyDefinition(
            name: name,
            permissions: ["write:sandboxes", "delete:sandboxes"],
            assignments: [
                .init(name: "viewer", permissions: []),
                .init(name: "developer", permissions: ["write:sandboxes", "delete:sandboxes"]),
            ],
            impliedAssignment: "viewer",
            resourceTypes: [
                .init(name: "organization", actions: [
                    .init(name: "read", requirement: .member),
                    .init(name: "update", requirement: .owner, conditions: [.sessionOnly]),
                ]),
                .init(name: "sandbox", actions: [
                    .init(name: "read", requirement: .member),
                    .init(name: "create", requirement: .anyOf(["write:sandboxes"]), conditions: [.notSuspended]),
                    .init(name: "delete", requirement: deleteRequirement),
                ]),
                .init(name: "member", actions: [
                    .init(name: "remove", requirement: .owner, conditions: [.sessionOnly, .notLastOwner]),
                ]),
            ])
    }

    static func policy(_ d: PolicyDefinition = definition()) -> CompiledPolicy {
        try! CompiledPolicy(d)
    }

    /// acme: u1 owner, u2 developer, u3 viewer; key k2 of u2 with write:sandboxes.
    /// frozen: suspended, u2 developer.
    static func records() -> [Record] {
        [
            .org(.init(id: "acme")),
            .org(.init(id: "frozen", suspended: true)),
            .user(.init(id: "u1", email: "u1@example.com", emailVerified: true)),
            .user(.init(id: "u2", email: "u2@example.com", emailVerified: true)),
            .user(.init(id: "u3", email: "u3@example.com", emailVerified: true)),
            .member(.init(org: "acme", user: "u1", role: "owner")),
            .member(.init(org: "acme", user: "u2", role: "member", assignments: ["developer"])),
            .member(.init(org: "acme", user: "u3", role: "member")),
            .member(.init(org: "frozen", user: "u2", role: "member", assignments: ["developer"])),
            .apiKey(.init(id: "k2", org: "acme", user: "u2", permissions: ["write:sandboxes"])),
        ]
    }

    static func directory(_ policy: CompiledPolicy = policy()) -> Directory {
        try! Directory.build(records().enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }, policy: policy)
    }
}

/// The policy loader a test can switch between good and broken policies.
final class SwitchableLoader: Sendable {
    private let next: Mutex<Result<CompiledPolicy, PolicyLoadError>>
    init(_ initial: Result<CompiledPolicy, PolicyLoadError>) { next = Mutex(initial) }
    func set(_ r: Result<CompiledPolicy, PolicyLoadError>) { next.withLock { $0 = r } }
    func load() -> Result<CompiledPolicy, PolicyLoadError> { next.withLock { $0 } }
}

/// A live server on 127.0.0.1, on a port the kernel chose; stopped by `stop()`.
struct TestServer {
    let server: AuthzServer
    let loader: SwitchableLoader
    var port: Int { server.port }

    init(configure: (inout ServerConfiguration) -> Void = { _ in }, ready: Bool = true) throws {
        var c = ServerConfiguration()
        c.host = "127.0.0.1"
        c.port = 0
        c.threads = 2
        c.connectionTimeout = 5
        c.adminToken = "admin-secret"
        configure(&c)
        let loader = SwitchableLoader(.success(Fixtures.policy()))
        self.loader = loader
        server = AuthzServer(configuration: c, directory: Fixtures.directory(), ready: ready,
                             policyLoader: { loader.load() })
        try server.start()
    }

    func stop() { server.shutdown(gracePeriod: .seconds(2)) }

    func client() -> HTTPClient { HTTPClient(port: port) }
}
