import AuthzCore

/// A small policy built in code: three global assignments (one with an alias, one implied),
/// and a few resource types whose actions exercise each kind of requirement.
enum Fixtures {
    static let definition = PolicyDefinition(
        name: "test",
        permissions: ["read:sandboxes", "write:sandboxes", "delete:sandboxes", "read:billing"],
        assignments: [
            .init(name: "developer", aliases: ["dev"], permissions: ["read:sandboxes", "write:sandboxes"]),
            .init(name: "viewer", permissions: ["read:sandboxes"]),
            .init(name: "billing", permissions: ["read:billing"]),
        ],
        impliedAssignment: "viewer",
        resourceTypes: [
            .init(name: "sandbox", actions: [
                .init(name: "read", requirement: .anyOf(["read:sandboxes"])),
                .init(name: "write", requirement: .anyOf(["write:sandboxes"])),
                .init(name: "delete", requirement: .anyOf(["delete:sandboxes"])),
            ]),
            .init(name: "billing", actions: [
                .init(name: "read", requirement: .anyOf(["read:billing"])),
            ]),
            .init(name: "member", actions: [
                .init(name: "list", requirement: .member),
                .init(name: "leave", requirement: .member, conditions: [.notLastOwner], target: .subject),
            ]),
            .init(name: "org", actions: [
                .init(name: "update", requirement: .owner, conditions: [.notSuspended]),
            ]),
        ])

    static let policy: CompiledPolicy = try! CompiledPolicy(definition)

    static let now = Timestamp(rfc3339: "2026-06-01T00:00:00Z")!

    /// Records numbered as lines 1, 2, 3...
    static func lines(_ records: [Record]) -> [LocatedRecord] {
        records.enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }
    }

    static func build(_ records: [Record]) throws -> Directory {
        try Directory.build(lines(records), policy: policy)
    }

    /// The errors `records`, applied to `directory` as one batch, are refused with (empty if accepted).
    static func errors(applying records: [Record], to directory: Directory) -> [DataError] {
        do {
            _ = try directory.applying(lines(records))
            return []
        } catch {
            return error.errors
        }
    }
}

extension Directory {
    /// The reason of a decision, `now` fixed.
    func reason(_ subject: String, _ action: String, _ resource: String, org: String = "acme") throws -> Reason {
        try check(subject: subject, action: action, resource: resource, org: org, now: Fixtures.now).reason
    }
}
