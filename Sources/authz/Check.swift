import ArgumentParser
import AuthzCore
import AuthzData
import AuthzPolicy
import Foundation

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decide one request offline, from a policy and a membership data file.",
        discussion: "Exit status: 0 allowed, 1 denied, 2 error (bad request, policy or data)."
    )

    @Option(help: "The policy file.") var policy = "policies/daytona.yaml"
    @Option(help: "Membership records, JSON Lines.") var data: String
    @Option(help: "Decide as of this RFC 3339 time (default: now).") var at: String?
    @Argument(help: "`user:<id>` or `api_key:<id>`.") var subject: String
    @Argument(help: "The action, e.g. `delete`.") var action: String
    @Argument(help: "`<type>:<id>`, e.g. `sandbox:sb1`.") var resource: String
    @Argument(help: "The organization id.") var org: String

    func run() throws {
        let now: Timestamp
        if let at {
            guard let t = Timestamp(rfc3339: at) else {
                printError("error: --at `\(at)` is not an RFC 3339 timestamp")
                throw ExitCode(2)
            }
            now = t
        } else {
            now = Timestamp.now
        }
        let compiled = try loadPolicyOrExit(policy, status: 2)
        let directory: Directory
        do {
            directory = try DataFile.load(path: data, policy: compiled)
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        let request = CheckRequest(subject: subject, action: action, resource: resource, org: org)
        do {
            let decision = try directory.check(request, now: now)
            print("\(decision.allowed ? "allow" : "deny") (\(decision.reason.code)): \(directory.explain(decision, for: request))")
            throw ExitCode(decision.allowed ? 0 : 1)
        } catch let error as CheckError {
            printError("error (\(error.code.rawValue)): \(error.message)")
            throw ExitCode(2)
        }
    }
}

extension Timestamp {
    /// The wall clock, for the edges of the program (the core never reads it).
    static var now: Timestamp {
        let t = Date().timeIntervalSince1970
        let s = t.rounded(.down)
        return Timestamp(seconds: Int64(s), nanoseconds: Int32((t - s) * 1e9))
    }
}
