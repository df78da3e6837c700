import AuthzCore
import AuthzPolicy
import Foundation
import Testing

/// The package root, found from this file, so tests read the shipped policies.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

func shipped(_ relative: String) -> String { packageRoot + "/" + relative }

@Suite struct PolicyLoaderTests {
    @Test func shippedPolicyCompilesToTheIssuesModel() throws {
        let p = try PolicyLoader.load(path: shipped("policies/daytona.yaml"))
        #expect(p.permissions.count == 15)
        #expect(p.resourceTypes == ["organization", "member", "invitation", "role", "api_key", "sandbox", "snapshot",
                                    "registry", "volume", "region", "runner", "audit_log"])
        #expect(p.actions.count == 54)
        #expect(p.assignment(named: "images_admin")?.name == "snapshots_admin")
        #expect(p.assignment(named: "super_admin")?.permissions == p.allPermissions)
        #expect(p.assignment(named: "viewer")?.permissions.isEmpty == true)
        #expect(p.impliedAssignment == p.assignment(named: "viewer")?.index)
        let push = try #require(p.action(type: "registry", action: "push"))
        #expect(push.requirement == .anyOf(PermissionSet([p.permission(named: "write:snapshots")!, p.permission(named: "write:sandboxes")!])))
        let leave = try #require(p.action(type: "organization", action: "leave"))
        #expect(leave.target == .subject)
        #expect(leave.conditions == ConditionSet([.sessionOnly, .notLastOwner]))
        #expect(p.action(type: "sandbox", action: "push") == nil)
    }

    @Test func examplePolicyCompiles() throws {
        let p = try PolicyLoader.load(path: shipped("policies/examples/docs.yaml"))
        #expect(p.ownerRole == "admin")
        #expect(p.memberRole == "writer")
        #expect(p.assignment(named: "author")?.name == "editor")
    }

    @Test func everyErrorIsReportedWithItsPositionSorted() {
        let yaml = """
        policy: broken
        permissions: [a, a, "b c"]
        roles:
          owner: {kind: owner}
        assignments:
          dev: {grants: [zz]}
          dev2: {grants: [a], aliases: [dev]}
        resources:
          sandbox:
            read: member
            read: owner
            write: {require: nope, when: [session_only, bogus]}
            push: {require: {any_of: [a, q]}}
        bogus: 1
        """
        do {
            _ = try PolicyLoader.compile(yaml: yaml, file: "broken.yaml")
            Issue.record("a broken policy compiled")
        } catch {
            let lines = error.errors.map { "\($0.line):\($0.column) \($0.message)" }
            #expect(lines == [
                "2:18 duplicate permission `a`",
                "2:21 permission `b c` is not a valid name (no spaces or control characters)",
                "4:3 `roles` needs a role of kind `member`",
                "6:18 assignment `dev` grants undeclared permission `zz`",
                "7:33 duplicate assignment name `dev`",
                "11:5 duplicate key `read`",
                "12:22 action `sandbox:write` requires `nope`, which is neither `member`, `owner`, `invitee` nor a declared permission",
                "12:49 unknown condition `bogus` (the engine implements: session_only, not_personal, not_suspended, not_self, not_last_owner, invitee, own_key_or_owner)",
                "13:34 action `sandbox:push` requires undeclared permission `q`",
                "14:1 the policy: unknown key `bogus` (expected one of: policy, permissions, roles, assignments, invitations, resources)",
            ])
            #expect(error.errors.allSatisfy { $0.file == "broken.yaml" })
            #expect(error.description.hasPrefix("broken.yaml:2:18: error: duplicate permission `a`"))
        }
    }

    @Test(arguments: [
        ("", "1:1 the policy file is empty"),
        ("permissions: [a\nroles: {}", "2:6 invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence at 1:14)"),
        ("- just\n- a list", "the policy must be a mapping"),
        ("permissions: [a]\nroles: {o: {kind: owner}, m: {kind: member}}\nassignments: {}\nresources: {t: {x: {require: owner, target: subject, when: [not_self]}}}",
         "`not_self` with `target: subject` can never hold"),
        ("permissions: [a]\nroles: {o: {kind: owner}, m: {kind: member}}\nassignments: {v: {implied: true, grants: []}, w: {implied: true, grants: []}}\nresources: {t: {x: member}}",
         "a second implied assignment"),
        ("permissions: [a]\nroles: {o: {kind: owner}, m: {kind: boss}}\nassignments: {}\nresources: {t: {x: member}}",
         "unknown role kind `boss`"),
        ("permissions: [a]\nroles: {o: {kind: owner}, m: {kind: member}}\nassignments: {}\nresources: {t: {x: {when: [session_only]}}}",
         "action `t:x` needs `require`"),
        ("permissions: [a]\nroles: {o: {kind: owner}, m: {kind: member}}\nassignments: {}\nresources: {t: {}}",
         "resource type `t` has no action"),
    ])
    func invalidPoliciesNeverCompile(yaml: String, expected: String) {
        do {
            _ = try PolicyLoader.compile(yaml: yaml, file: "p.yaml")
            Issue.record("compiled: \(yaml)")
        } catch {
            #expect(error.errors.contains { "\($0.line):\($0.column) \($0.message)".contains(expected) },
                    "\(error.description)")
        }
    }

    @Test func tooManyPermissionsAreRefused() {
        let perms = (0..<65).map { "p\($0)" }.joined(separator: ", ")
        let yaml = "permissions: [\(perms)]\nroles: {o: {kind: owner}, m: {kind: member}}\nassignments: {}\nresources: {t: {x: member}}"
        #expect(throws: PolicyErrors.self) { try PolicyLoader.compile(yaml: yaml, file: "p.yaml") }
    }

    @Test func unreadableFileIsAnError() {
        do {
            _ = try PolicyLoader.load(path: "/nonexistent/policy.yaml")
            Issue.record("loaded a missing file")
        } catch {
            #expect(error.errors.first?.message == "cannot read the policy file")
        }
    }

    /// A policy from its sections (the rest valid), for the bounds below.
    static func policy(permissions: String = "[p]", assignments: String = "  v: {grants: [p]}",
                       resources: String = "  t: {read: member}") -> String {
        "policy: x\npermissions: \(permissions)\nroles:\n  owner: {kind: owner}\n  member: {kind: member}\n"
            + "assignments:\n\(assignments)\nresources:\n\(resources)\n"
    }

    static func errors(_ yaml: String) -> [String] {
        do {
            _ = try PolicyLoader.compile(yaml: yaml, file: "p.yaml")
            return []
        } catch {
            return error.errors.map { "\($0.line):\($0.column) \($0.message)" }
        }
    }

    /// A duplicate key is found at its line whatever breaks the lines: Yams counts a lone CR,
    /// CRLF, NEL, U+2028 and U+2029 as line breaks (the policy loader once split on LF only,
    /// and trapped: a reload of such a file killed the server).
    @Test(arguments: ["\n", "\r\n", "\r", "\u{85}", "\u{2028}", "\u{2029}"])
    func aDuplicateKeyIsReportedAtItsLineWhateverBreaksTheLines(_ newline: String) {
        let yaml = Self.policy(assignments: "  v: {grants: [p]}\n  v: {grants: []}")
            .replacingOccurrences(of: "\n", with: newline)
        #expect(Self.errors(yaml) == ["8:3 duplicate key `v`"])
    }

    /// What a bad policy can cost is bounded: its size, and what an anchor aliased many times
    /// can multiply (resource types, actions, list items, assignments), each said at once.
    @Test func boundsAreSaidBeforeTheWorkTheyBound() {
        #expect(Self.errors(String(repeating: "#", count: PolicyLoader.maxBytes + 1)).first
                == "1:1 the policy is 262145 bytes; at most 262144 are read (a policy is a few kilobytes)")
        let actions = (0..<20).map { "    a\($0): member" }.joined(separator: "\n")
        let types = (1..<1_100).map { "  t\($0): *A" }.joined(separator: "\n")
        #expect(Self.errors(Self.policy(resources: "  t0: &A\n\(actions)\n\(types)"))
                == ["9:3 1100 resource types declared; at most 1024 are supported"])
        let many = (0..<1_000).map { "    a\($0): member" }.joined(separator: "\n")
        let some = (1..<20).map { "  t\($0): *A" }.joined(separator: "\n")
        #expect(Self.errors(Self.policy(resources: "  t0: &A\n\(many)\n\(some)"))
                == ["1025:3 resource type `t16` brings the actions to 17000; at most 16384 are supported in all"])
        #expect(Self.errors(Self.policy(permissions: "[p, " + (1..<100).map { "p\($0)" }.joined(separator: ", ") + "]"))
                == ["2:14 100 permissions declared; at most 64 are supported"])
        #expect(Self.errors(Self.policy(assignments: (0..<65).map { "  v\($0): {grants: [p]}" }.joined(separator: "\n")))
                == ["7:3 65 assignments declared; at most 64 global assignments are supported"])
        let grants = "[" + Array(repeating: "p", count: 1_025).joined(separator: ", ") + "]"
        #expect(Self.errors(Self.policy(assignments: "  v: {grants: \(grants)}"))
                == ["7:15 `grants` of `v` has 1025 items; at most 1024 are read"])
    }

    /// Within every other bound an anchor can still multiply what is read (1,024 types of 16
    /// actions each naming a 1,024-item list, 16M items from 15 KB): a million is read, at most,
    /// and then the policy is refused with that error alone.
    @Test func whatAliasesMultiplyIsBounded() {
        let list = "[" + Array(repeating: "p", count: 1_024).joined(separator: ", ") + "]"
        let actions = (0..<16).map { "    a\($0): {require: {any_of: *L}}" }.joined(separator: "\n")
        let types = (1..<1_024).map { "  t\($0): *A" }.joined(separator: "\n")
        let yaml = Self.policy(assignments: "  v: {grants: &L \(list)}", resources: "  t0: &A\n\(actions)\n\(types)")
        let errors = Self.errors(yaml)
        #expect(errors.count == 1)
        #expect(errors.first?.hasSuffix("the policy reads as more than 1000000 mapping entries and list items (aliases count each time they are used)") == true, "\(errors)")
    }

    /// One mistake repeated through an alias is listed 100 times, then said to go on.
    @Test func errorsStopAtOneHundred() {
        let actions = (0..<300).map { "    a\($0): {require: nope}" }.joined(separator: "\n")
        let errors = Self.errors(Self.policy(resources: "  t0:\n\(actions)"))
        #expect(errors.count == 101)
        #expect(errors.last?.hasSuffix("more errors follow; the first 100 are listed") == true)
    }

    /// A resource type with a colon could never be requested (a resource splits at its first
    /// colon); an invitation status is a name like any other.
    @Test func namesThatCouldNeverBeUsedAreRefused() {
        let yaml = Self.policy(resources: "  \"e:f\": {read: member}\n  t: {read: member}")
            + "invitations:\n  statuses: [pending, \"a b\", \"\"]\n"
        #expect(Self.errors(yaml) == [
            "9:3 resource type `e:f` contains `:`, so no resource could name it (a resource is `<type>:<id>`)",
            "12:23 invitation status `a b` is not a valid name (no spaces or control characters)",
            "12:30 invitation status `` is not a valid name (no spaces or control characters)",
        ])
    }

    /// A file that is not UTF-8 is refused at its first bad byte.
    @Test func aFileThatIsNotUTF8IsRefusedWhereItStopsBeingUTF8() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("policy-\(UUID().uuidString).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        FileManager.default.createFile(atPath: path, contents: Data("policy: x\nroles:\n  ow".utf8) + Data([0xC3, 0x28]) + Data("ner: {}\n".utf8))
        do {
            _ = try PolicyLoader.load(path: path)
            Issue.record("a file that is not UTF-8 loaded")
        } catch {
            #expect(error.errors.map { "\($0.line):\($0.column) \($0.message)" } == ["3:5 the policy file is not UTF-8 (a byte 0xc3 here)"])
        }
    }
}
