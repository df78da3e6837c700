import Foundation
import ArgumentParser
import AuthzCore
import AuthzPolicy

struct Compile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a policy file and print its compiled permission matrix.",
        discussion: "On failure every error is printed as file:line:column, and the exit status is 1."
    )

    @Option(name: .long, help: "The policy file.")
    var policy = "policies/daytona.yaml"

    func run() throws {
        let compiled = try loadPolicyOrExit(policy, status: 1, summary: true)
        print(MatrixReport(compiled).render())
    }
}

/// The compiled matrix as readable tables: assignment x permission, and action -> requirement.
struct MatrixReport {
    let policy: CompiledPolicy
    init(_ policy: CompiledPolicy) { self.policy = policy }

    func render() -> String {
        var out = "policy `\(policy.name)`: \(policy.permissions.count) permissions, \(policy.assignments.count) assignments, "
            + "\(policy.resourceTypes.count) resource types, \(policy.actions.count) actions\n\n"
        out += "assignments x permissions (x = granted)\n"
        let header = ["assignment"] + policy.permissions.indices.map { "p\($0 + 1)" }
        var rows: [[String]] = []
        let ownerRow = [policy.ownerRole + " (role)"] + policy.permissions.indices.map { _ in policy.ownerHasAllPermissions ? "x" : "." }
        rows.append(ownerRow)
        for a in policy.assignments {
            var name = a.name
            if !a.aliases.isEmpty { name += " (" + a.aliases.joined(separator: ", ") + ")" }
            if policy.impliedAssignment == a.index { name += " [implied]" }
            rows.append([name] + policy.permissions.indices.map { a.permissions.contains(index: $0) ? "x" : "." })
        }
        out += table([header] + rows)
        out += "\n" + policy.permissions.enumerated().map { "  p\($0.offset + 1) = \($0.element)" }.joined(separator: "\n") + "\n\n"
        out += "actions -> requirement\n"
        var actionRows = [["id", "resource", "action", "requires", "conditions"]]
        for a in policy.actions {
            let req: String
            switch a.requirement {
            case .member: req = "member"
            case .owner: req = "owner"
            case .invitee: req = "invitee"
            case .anyOf(let set): req = set.count == 1 ? policy.names(of: set)[0] : "any(" + policy.names(of: set).joined(separator: ", ") + ")"
            }
            var conds = a.conditions.conditions.filter { !(a.requirement == .invitee && $0 == .invitee) }.map(\.name).joined(separator: ", ")
            if a.target == .subject { conds += " (target: subject)" }
            actionRows.append([String(a.id), policy.resourceTypes[a.resourceType], a.name, req, conds])
        }
        out += table(actionRows)
        return out
    }

    private func table(_ rows: [[String]]) -> String {
        let widths = rows[0].indices.map { c in rows.map { $0[c].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingTrailingSpaces()
        }.joined(separator: "\n") + "\n"
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var s = self
        while s.hasSuffix(" ") { s.removeLast() }
        return s
    }
}
