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

    /// A wrong type is an error at its file, line, column and field, never read as nothing
    /// (a run of 0 cases) or as "" (which `expect: error:invalid_subject` would then pass).
    @Test(arguments: [
        ("cases: {a: 1}", "x.test.yaml:6:8: (suite): `cases` must be a list, got a mapping"),
        ("cases: hello", "x.test.yaml:6:8: (suite): `cases` must be a list, got `hello`"),
        ("grids: 5", "x.test.yaml:6:8: (suite): `grids` must be a list, got `5`"),
        ("scenarios: {a: 1}", "x.test.yaml:6:12: (suite): `scenarios` must be a list, got a mapping"),
        ("cases: [hello]", "x.test.yaml:6:9: (suite): a case must be a mapping (name, subject, action, resource, org, expect, reason, at), got `hello`"),
        ("cases: [{subject: [user:bob], action: read, resource: sandbox:s, org: acme, expect: \"error:invalid_subject\"}]",
         "x.test.yaml:6:19: (suite): `subject` must be a string, got a list"),
        ("cases: [{subject: user:bob, action: {a: 1}, resource: sandbox:s, org: acme, expect: \"error:invalid_action\"}]",
         "x.test.yaml:6:37: (suite): `action` must be a string, got a mapping"),
        ("cases: [{subject: user:bob, action: read, resource: sandbox:s, org: acme, expect: allow, reason: [membership]}]",
         "x.test.yaml:6:98: (suite): `reason` must be a string, got a list"),
        ("grids: [{resource: sandbox:s, org: acme, actions: [read, [x]], expect: {user:bob: [allow, allow]}}]",
         "x.test.yaml:6:58: (suite): an action in `actions` must be a string, got a list"),
        ("grids: [{resource: sandbox:s, org: acme, actions: [read], expect: {[user:bob]: [\"error:invalid_subject\"]}}]",
         "x.test.yaml:6:68: (suite): a grid subject must be a string, got a list"),
        ("grids: [{resource: sandbox:s, org: acme, actions: [read], expect: {user:bob: allow}}]",
         "x.test.yaml:6:78: (suite): a grid row must be a list, got `allow`"),
        ("grids: [{resource: sandbox:s, org: acme, actions: [read], expect: {user:bob: [allow]}, att: 2026-01-01T00:00:00Z}]",
         "x.test.yaml:6:88: (suite): unknown key `att` in a grid (expected: name, resource, org, actions, expect, at)"),
        ("scenarios: [hello]", "x.test.yaml:6:13: (suite): a scenario must be a mapping (name, data, cases, grids), got `hello`"),
    ])
    func wrongTypesAreErrorsAtTheirField(_ yaml: String, _ expected: String) throws {
        let failures = try runSuite(header + yaml)
        #expect(failures == [expected])
    }

    /// A suite, or a scenario, that holds no case cannot fail: it is an error, not a green run.
    @Test func suitesAndScenariosWithoutCasesAreErrors() throws {
        let bare = try runSuite(header)
        #expect(bare == ["x.test.yaml:1:1: (suite): the suite has no cases: give it `cases`, `grids` or `scenarios` with cases"])
        let emptyList = try runSuite(header + "cases: []")
        #expect(emptyList == ["x.test.yaml:1:1: (suite): the suite has no cases: give it `cases`, `grids` or `scenarios` with cases"])
        let emptyScenario = header + """
        cases: [{subject: user:bob, action: read, resource: sandbox:s, org: acme, expect: allow}]
        scenarios:
          - name: bob leaves
            data: [{kind: member, op: delete, org: acme, user: bob}]
        """
        let scenario = try runSuite(emptyScenario)
        #expect(scenario == ["x.test.yaml:8:5: (suite): scenario `bob leaves` has no cases: give it `cases` or `grids`"])
    }

    /// A suite file that is not there is a failure of the file, with no line to point at.
    @Test func aMissingSuiteFileIsAFailureOfTheFile() {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("suite-\(UUID().uuidString)/x.test.yaml").path
        let result = SuiteRunner.run(file: path)
        #expect(result.failures.map(\.description) == ["\(path): (suite): no such suite file"])
        #expect(result.failed == 1)
    }

    /// YAML errors are reported at their line and column, on one line: not at line 1 with
    /// the whole file after it.
    @Test func yamlErrorsAreReportedAtTheirLineAndColumn() throws {
        let duplicate = header + """
        cases:
          - subject: user:bob
            action: read
            resource: sandbox:s
            org: acme
            action: delete
            expect: allow
        """
        let block = try runSuite(duplicate)
        #expect(block == ["x.test.yaml:11:5: (suite): duplicate key `action`"])
        let flowDuplicate = header + "cases: [{subject: user:bob, action: read, resource: sandbox:s, org: acme, action: read, expect: allow}]"
        let flow = try runSuite(flowDuplicate)
        #expect(flow == ["x.test.yaml:6:29: (suite): duplicate key `action` in this mapping"])
        let unclosed = header + """
        cases:
          - {subject: user:bob, action: read
        grids: []
        """
        let syntax = try runSuite(unclosed)
        #expect(syntax == [
            "x.test.yaml:8:6: (suite): invalid YAML: did not find expected ',' or '}' (while parsing a flow mapping at 7:5)",
        ])
    }

    /// A code no decision has makes a case that can never pass: refused when the suite loads,
    /// with the codes there are.
    @Test func unknownCodesAreRefusedAtLoad() throws {
        let errorCodes = "invalid_subject, invalid_resource, invalid_org, invalid_action, unknown_resource_type, unknown_action"
        let bogus = try runSuite(header + """
            cases:
              - {subject: user:bob, action: read, resource: sandbox:s, org: acme, expect: "error:bogus_code"}
              - {subject: user:bob, action: read, resource: sandbox:s, org: acme, expect: error, reason: not_member}
              - {subject: user:bob, action: read, resource: sandbox:s, org: acme, expect: allow, reason: not_member}
              - {subject: user:bob, action: read, resource: sandbox:s, org: acme, expect: "deny:nope"}
            """)
        let denials = "unknown_key, key_expired, key_wrong_org, session_only, not_member, not_invitee, owner_required, "
            + "missing_permission, personal_org, org_suspended, self_update, last_owner, not_key_owner"
        #expect(bogus == [
            "x.test.yaml:7:79: (suite): unknown error code `bogus_code` (the request error codes: \(errorCodes))",
            "x.test.yaml:8:94: (suite): unknown error code `not_member` (the request error codes: \(errorCodes))",
            "x.test.yaml:9:94: (suite): `not_member` is a reason to deny (the reasons to allow: owner, membership, assignment, api_key, invitee)",
            "x.test.yaml:10:79: (suite): unknown reason code `nope` (the reasons to deny: \(denials))",
        ])
    }

    /// An error in a `data_file` names that file and its line, not the suite's `data_file:` line;
    /// inline records still name the suite and their own line.
    @Test func dataFileErrorsNameTheDataFile() throws {
        let suite = """
        policy: \(shipped("policies/daytona.yaml"))
        now: 2026-06-01T00:00:00Z
        data_file: d.jsonl
        data:
          - {kind: member, org: ghost, user: carol, role: member}
        cases: [{subject: user:bob, action: read, resource: sandbox:s, org: acme, expect: allow}]
        """
        let unknownOrg = try runSuite(suite, files: ["d.jsonl": """
            {"kind":"org","id":"acme"}
            {"kind":"member","org":"nope","user":"bob","role":"member"}

            """])
        #expect(unknownOrg == [
            "d.jsonl:2: (data): field `org`: unknown org `nope`",
            "x.test.yaml:5: (data): field `org`: unknown org `ghost`",
        ])
        let undecodable = try runSuite(suite, files: ["d.jsonl": """
            {"kind":"org","id":"acme"}

            {"kind":"member","org":"acme"}

            """])
        #expect(undecodable == ["d.jsonl:3: (suite): field `user`: missing required field `user`"])
        let scenario = try runSuite(header + """
            cases: [{subject: user:bob, action: read, resource: sandbox:s, org: acme, expect: allow}]
            scenarios:
              - name: carol joins
                data: [{kind: member, org: ghost, user: carol, role: member}]
                cases: [{subject: user:carol, action: read, resource: sandbox:s, org: acme, expect: deny}]
            """)
        #expect(scenario == ["x.test.yaml:9: carol joins (data): field `org`: unknown org `ghost`"])
    }

    @Test func aSuiteThatIsNotUTF8IsSaidToBeSo() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("suite-\(UUID().uuidString).test.yaml")
        defer { try? FileManager.default.removeItem(at: path) }
        try Data([0x61, 0x3A, 0x20, 0xFF, 0x0A]).write(to: path)
        #expect(SuiteRunner.run(file: path.path).failures.map(\.message) == ["the suite file is not UTF-8"])
    }

    /// Lines 1-5 of a suite: the shipped policy, `now`, and bob, a developer of acme.
    private var header: String {
        """
        policy: \(shipped("policies/daytona.yaml"))
        now: 2026-06-01T00:00:00Z
        data:
          - {kind: org, id: acme}
          - {kind: member, org: acme, user: bob, role: member, assignments: [developer]}

        """
    }

    /// Runs `yaml` as `x.test.yaml` (with `files` beside it) and returns what `authz test`
    /// prints for each failure, with paths relative to the suite's folder.
    private func runSuite(_ yaml: String, files: [String: String] = [:]) throws -> [String] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("suite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, text) in files { try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        try yaml.write(to: dir.appendingPathComponent("x.test.yaml"), atomically: true, encoding: .utf8)
        let result = SuiteRunner.run(file: dir.appendingPathComponent("x.test.yaml").path)
        return result.failures.map { $0.description.replacingOccurrences(of: dir.path + "/", with: "") }
    }
}
