import AuthzCore
import AuthzPolicy
import Foundation
import Testing

@Suite struct PolicySuiteTests {
    /// `swift test` runs the shipped suites too: each must pass, and must actually hold cases.
    @Test(arguments: ["policies/daytona.test.yaml", "policies/examples/docs.test.yaml"])
    func shippedSuitePasses(_ suite: String) {
        let result = SuiteRunner.run(file: shipped(suite))
        #expect(result.failures.isEmpty, "\(result.failures.map(\.description).joined(separator: "\n"))")
        #expect(result.passed > 20)
    }

    @Test func discoveryFindsEveryShippedSuite() {
        let found = SuiteRunner.discover([shipped("policies")]).map { $0.replacingOccurrences(of: packageRoot + "/", with: "") }
        #expect(found == ["policies/daytona.test.yaml", "policies/examples/docs.test.yaml"])
    }

    /// The runner must be able to fail: a wrong expectation, a wrong reason, a bad suite.
    @Test func wrongExpectationsFailWithFileLineAndCase() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("suite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let suite = """
        policy: \(shipped("policies/daytona.yaml"))
        now: 2026-06-01T00:00:00Z
        data:
          - {kind: org, id: acme}
          - {kind: member, org: acme, user: bob, role: member, assignments: [developer]}
        cases:
          - {name: right, subject: user:bob, action: create, resource: sandbox:s, org: acme, expect: allow}
          - {name: wrong outcome, subject: user:bob, action: delete, resource: sandbox:s, org: acme, expect: allow}
          - {name: wrong reason, subject: user:bob, action: delete, resource: sandbox:s, org: acme, expect: "deny:not_member"}
          - {name: wrong error, subject: bob, action: read, resource: sandbox:s, org: acme, expect: "error:unknown_action"}
        grids:
          - name: g
            resource: sandbox:s
            org: acme
            actions: [read, delete]
            expect:
              user:bob: [allow, allow]
        """
        let path = dir.appendingPathComponent("x.test.yaml").path
        try suite.write(toFile: path, atomically: true, encoding: .utf8)
        let result = SuiteRunner.run(file: path)
        #expect(result.passed == 2)
        #expect(result.failures.map(\.caseName) == ["wrong outcome", "wrong reason", "wrong error", "g: user:bob delete"])
        #expect(result.failures.map(\.line) == [8, 9, 10, 17])
        #expect(result.failures[0].message.hasPrefix("expected allow, got deny (missing_permission): `delete` on `sandbox` requires `delete:sandboxes`"))
    }

    @Test func badSuitesAndBadDataAreReportedNotSkipped() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("suite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = """
        policy: \(shipped("policies/daytona.yaml"))
        now: yesterday
        cases:
          - {subject: user:bob, action: read, resource: sandbox:s, org: acme, expect: maybe}
          - {subject: user:bob, action: read, org: acme, expect: allow}
        """
        let path = dir.appendingPathComponent("bad.test.yaml").path
        try bad.write(toFile: path, atomically: true, encoding: .utf8)
        let result = SuiteRunner.run(file: path)
        #expect(result.passed == 0)
        #expect(result.failures.map(\.line) == [2, 4, 5])

        let badData = """
        policy: \(shipped("policies/daytona.yaml"))
        now: 2026-06-01T00:00:00Z
        data:
          - {kind: member, org: ghost, user: bob, role: member}
        cases:
          - {subject: user:bob, action: read, resource: sandbox:s, org: ghost, expect: deny}
        """
        let path2 = dir.appendingPathComponent("data.test.yaml").path
        try badData.write(toFile: path2, atomically: true, encoding: .utf8)
        let r2 = SuiteRunner.run(file: path2)
        #expect(r2.passed == 0)
        #expect(r2.failures.count == 1)
        #expect(r2.failures.first?.message.contains("unknown org `ghost`") == true)
    }
}
