import ArgumentParser
import AuthzCore
import AuthzData
import AuthzPolicy
import AuthzWorkload
import Foundation

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate seeded, realistic membership data (JSON Lines) and a check query mix.",
        discussion: """
            The same seed and policy give the same output. Data goes to stdout or --out, in an \
            order that `authz check --data` and a sync accept; queries (one JSON check request per \
            line) to --queries-out. Expiries are relative to \(Corpus.now), not to the clock.
            """
    )

    @Option(help: "The policy file (names of assignments, permissions and actions).") var policy = "policies/daytona.yaml"
    @Option(help: "How many member records to generate.") var memberships: Int
    @Option(help: "The random seed.") var seed: UInt64 = 1
    @Option(help: "Write the records here instead of stdout.") var out: String?
    @Option(help: "How many check requests to generate.") var queries = 0
    @Option(help: "Write the check requests here (JSON Lines).") var queriesOut: String?

    func validate() throws {
        guard memberships > 0 else { throw ValidationError("--memberships must be positive") }
        guard queries >= 0 else { throw ValidationError("--queries must not be negative") }
        if queries > 0 && queriesOut == nil { throw ValidationError("--queries needs --queries-out") }
    }

    func run() throws {
        let compiled = try loadPolicyOrExit(policy, status: 2)
        let corpus = Corpus(memberships: memberships, seed: seed, policy: compiled)
        try write(corpus.records.lazy.map(RecordCodec.encode), to: out)
        if queries > 0, let queriesOut {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let requests = corpus.queries(queries, seed: seed &+ 1, policy: compiled)
            try write(try requests.map { String(decoding: try encoder.encode($0), as: UTF8.self) }, to: queriesOut)
        }
    }

    /// Writes lines in chunks (a million records are a few hundred MB of text).
    private func write(_ lines: some Sequence<String>, to path: String?) throws {
        let handle: FileHandle
        if let path {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                printError("error: cannot create `\(path)`")
                throw ExitCode(2)
            }
            handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        } else {
            handle = FileHandle.standardOutput
        }
        var buffer = ""
        buffer.reserveCapacity(1 << 20)
        for line in lines {
            buffer += line
            buffer += "\n"
            if buffer.utf8.count >= 1 << 20 {
                try handle.write(contentsOf: Data(buffer.utf8))
                buffer.removeAll(keepingCapacity: true)
            }
        }
        try handle.write(contentsOf: Data(buffer.utf8))
        if path != nil { try handle.close() }
    }
}
