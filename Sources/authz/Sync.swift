import ArgumentParser
import AuthzClient
import AuthzCore
import AuthzData
import AuthzPolicy
import AuthzStore
import Foundation

struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Push membership records (JSON Lines) to a server, or straight into a store file.",
        discussion: """
        Every line's form is validated locally first (file:line errors, nothing sent). What depends on the \
        server's data (an unknown org, role or assignment) is checked by the server, batch by batch: in apply \
        mode records go in batches, each atomic, and the batches before a refused one stay applied (said on \
        exit); --replace sends the whole state as one atomic replace. \
        Exit status: 0 done, 1 invalid input, 2 server unreachable or refused (token, conflict).
        """
    )

    @Option(help: "The server's base URL.") var server = "http://127.0.0.1:8180"
    @Option(help: "A file holding the admin token (default: $AUTHZ_ADMIN_TOKEN).") var tokenFile: String?
    @Flag(help: "The input is the complete desired state: everything else is removed.") var replace = false
    @Option(help: "Records per batch in apply mode.") var batchSize = 5000
    @Option(help: "Only if the server is at this revision (409 otherwise).") var ifRevision: Int64?
    @Option(help: "Write into this store file instead of a server (no server may be running on it).") var store: String?
    @Option(help: "The policy, for --store.") var policy = "policies/daytona.yaml"
    @Option(help: "Attempts while the server is unreachable.") var retries = 6
    @Flag(help: "Compress what is sent (Content-Encoding: gzip, about 4x smaller), for a slow link to the server; on a fast one it costs more than it saves. Needs a server with gzip support (older ones answer invalid_data).")
    var gzip = false
    @Argument(help: "JSON Lines files, or - for standard input.") var files: [String]

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("name at least one file, or - for standard input") }
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        if gzip && store != nil { throw ValidationError("--gzip compresses what is sent to a server; --store writes the file itself") }
    }

    func run() async throws {
        // 1. Read and validate locally.
        var records: [LocatedRecord] = []
        var origins: [(file: String, line: Int)] = []
        // For --replace the validated input goes as it is (no re-encoding): the files, each
        // ending in a newline, with where each starts in the body's line numbering.
        var raw = Data()
        var rawStarts: [(file: String, firstLine: Int)] = []
        var rawLines = 0
        var recordCount = 0
        var invalid = false
        for file in files {
            let data: Data
            if file == "-" {
                data = FileHandle.standardInput.readDataToEndOfFile()
            } else if let d = FileManager.default.contents(atPath: file) {
                data = d
            } else {
                printError("\(file): cannot read")
                throw ExitCode(1)
            }
            // A replace sent to a server goes as the raw input: its records are only checked
            // and counted, a window at a time (decoding them all held ~500 MB at 1M memberships).
            let sendRaw = replace && store == nil
            let decoded = sendRaw ? (records: [], errors: []) : RecordCodec.decodeLines(data)
            let checked = sendRaw ? RecordCodec.checkLines(data) : (count: decoded.records.count, errors: decoded.errors)
            for e in checked.errors {
                printError("\(file == "-" ? "<stdin>" : file):\(e.line): \(e.detail)")
                invalid = true
            }
            recordCount += checked.count
            if !sendRaw {
                // Numbered across all inputs (line = position + 1), so an error found after the
                // files are joined names its record; `origins` maps it back to file and line.
                origins += decoded.records.map { (file == "-" ? "<stdin>" : file, $0.line) }
                let base = records.count
                records += decoded.records.enumerated().map { LocatedRecord(line: base + $0.offset + 1, record: $0.element.record) }
            }
            if replace {
                rawStarts.append((file == "-" ? "<stdin>" : file, rawLines + 1))
                // The bytes validated are the bytes sent (a single input is not copied).
                if raw.isEmpty { raw = data } else { raw.append(data) }
                // A last line without its newline gets one (an empty input adds no line).
                let unended = !data.isEmpty && data.last != UInt8(ascii: "\n")
                if unended { raw.append(UInt8(ascii: "\n")) }
                let breaks = data.withUnsafeBytes { bytes in bytes.reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) } }
                rawLines += breaks + (unended ? 1 : 0)
            }
        }
        if invalid { throw ExitCode(1) }
        let start = Date()

        // 2a. Straight into a store.
        if let store {
            try syncStore(store, records, origins, start)
            return
        }

        // 2b. To a server.
        guard let url = URL(string: server), url.scheme == "http" || url.scheme == "https" else {
            printError("error: --server `\(server)` is not an http(s) URL")
            throw ExitCode(2)
        }
        let client = AuthzClient(server: url, token: try readToken(), timeout: 600)
        let progress = Progress(total: recordCount)
        var totals = (upserted: 0, deleted: 0, revision: Int64(0), batches: 0)
        let batches: [Range<Int>] = replace
            ? [0..<recordCount]
            : stride(from: 0, to: recordCount, by: batchSize).map { $0..<min($0 + batchSize, recordCount) }
        var expected = ifRevision
        for range in batches {
            let body: Data
            let locate: (Int) -> String
            if replace {
                body = raw
                locate = { line in
                    guard let part = rawStarts.last(where: { $0.firstLine <= line }) else { return "line \(line)" }
                    return "\(part.file):\(line - part.firstLine + 1)"
                }
            } else {
                body = Data(RecordCodec.encodeLines(records[range].map(\.record)).utf8)
                locate = { line in
                    let i = range.lowerBound + line - 1
                    return origins.indices.contains(i) ? "\(origins[i].file):\(origins[i].line)" : "batch line \(line)"
                }
            }
            // Said if this batch fails: what earlier batches did stays done.
            let applied = range.lowerBound == 0 ? nil
                : "note: \(range.lowerBound == 1 ? "the record" : "the \(range.lowerBound) records") before this batch "
                + "\(range.lowerBound == 1 ? "was" : "were") applied (revision \(totals.revision))"
            let outcome = try await pushWithRetry(client, body, expected: expected, applied: applied, locate: locate)
            totals.upserted += outcome.upserted
            totals.deleted += outcome.deleted
            totals.revision = outcome.revision
            totals.batches += 1
            if expected != nil { expected = outcome.revision }
            progress.advance(to: range.upperBound)
        }
        progress.finish()
        let secs = Date().timeIntervalSince(start)
        print("synced \(recordCount) record\(recordCount == 1 ? "" : "s") in \(totals.batches) batch\(totals.batches == 1 ? "" : "es")\(replace ? " (replace)" : "") to \(server): "
            + "revision \(totals.revision), upserted \(totals.upserted), deleted \(totals.deleted), "
            + String(format: "%.2f s, %.0f records/s", secs, Double(recordCount) / max(secs, 1e-9)))
    }

    /// `applied`: what to say, on failure, of the batches already applied.
    private func pushWithRetry(_ client: AuthzClient, _ body: Data, expected: Int64?, applied: String?,
                               locate: (Int) -> String) async throws -> AuthzClient.SyncOutcome {
        /// `unknown`: whether this batch may have been applied (the store's state is unknown, or
        /// the server stopped answering after it may have committed).
        func fail(_ code: Int32, unknown: Bool = false) -> ExitCode {
            if let applied {
                let from = locate(1) // where this batch starts in the input
                printError(applied + (unknown ? "; whether the batch from \(from) on was applied is unknown" : "; none from \(from) on"))
            }
            return ExitCode(code)
        }
        var delay: Double = 0.25
        var attempt = 1
        while true {
            do {
                return try await client.sync(body, mode: replace ? .replace : .apply, ifRevision: expected,
                                             encoding: gzip ? .gzip : .identity)
            } catch {
                switch error {
                case .unreachable, .refused(status: 503, _, _, _):
                    guard attempt < retries else {
                        printError("error: \(error) (gave up after \(attempt) attempts)")
                        throw fail(2, unknown: true) // an attempt may have committed before the answer was lost
                    }
                    printError("\(error); retrying in \(String(format: "%.2g", delay)) s")
                    try? await Task.sleep(nanoseconds: UInt64(delay * 1e9))
                    delay = min(delay * 2, 8)
                    attempt += 1
                case .refused(400, "invalid_data", let message, let body):
                    // The server's line numbers count lines of this batch; name the input's.
                    let lines = (try? JSONDecoder().decode(InvalidData.self, from: body))?.error.errors ?? []
                    if lines.isEmpty { printError("error: the server refused the data: \(message)") }
                    for e in lines {
                        let at = locate(e.line)
                        printError("\(at): \(e.detail)")
                    }
                    throw fail(1)
                case .refused(let status, let code, let message, _):
                    printError("error: the server refused the sync (\(status) \(code)): \(message)")
                    throw fail(2, unknown: code == "store_state_unknown")
                case .badResponse(let m):
                    // An answer this command cannot read may still be a commit's.
                    printError("error: unexpected answer from the server: \(m)")
                    throw fail(2, unknown: true)
                case .unreadable(let m):
                    printError("error: cannot read \(m)")
                    throw ExitCode(1)
                }
            }
        }
    }

    private struct InvalidData: Decodable {
        struct Body: Decodable { var errors: [Line]? = [] }
        struct Line: Decodable {
            var line: Int
            var field: String?
            var message: String
            var detail: String { DataError(line: line, field: field, message: message).detail }
        }
        var error: Body
    }

    private func readToken() throws -> String? {
        if let tokenFile {
            guard let t = try? String(contentsOfFile: tokenFile, encoding: .utf8) else {
                printError("error: cannot read --token-file `\(tokenFile)`")
                throw ExitCode(2)
            }
            return t.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return ProcessInfo.processInfo.environment["AUTHZ_ADMIN_TOKEN"]
    }

    private func syncStore(_ path: String, _ records: [LocatedRecord], _ origins: [(file: String, line: Int)], _ start: Date) throws {
        let compiled = try loadPolicyOrExit(policy, status: 1)
        func report(_ errors: [DataError]) -> ExitCode {
            for e in errors {
                let at = origins.indices.contains(e.line - 1) ? "\(origins[e.line - 1].file):\(origins[e.line - 1].line)" : "line \(e.line)"
                printError("\(at): \(e.detail)")
            }
            return ExitCode(1)
        }
        // A store that does not exist yet holds nothing: records refused against an empty
        // directory are refused before the store, and its folder, are made.
        if !FileManager.default.fileExists(atPath: path) {
            do { _ = try Directory(policy: compiled).applying(records) } catch { throw report(error.errors) }
        }
        let writer: MembershipSync
        do {
            writer = try MembershipSync(store: try MembershipStore(path: path), policy: compiled, publish: { _, _ in })
        } catch {
            printError("error: cannot open store `\(path)`: \(error)")
            throw ExitCode(2)
        }
        switch writer.sync(records, mode: replace ? .replace : .apply, ifRevision: ifRevision) {
        case .success(let o):
            let secs = Date().timeIntervalSince(start)
            print("synced \(records.count) records into \(path): revision \(o.revision), upserted \(o.upserted), deleted \(o.deleted), "
                + String(format: "%.2f s", secs) + " (validate \(o.validation), commit \(o.commit))")
        case .failure(.invalid(let errors)):
            throw report(errors)
        case .failure(.conflict(let current)):
            printError("error: the store is at revision \(current), not \(ifRevision ?? -1)")
            throw ExitCode(2)
        case .failure(.storage(let m)):
            printError("error: \(m)")
            throw ExitCode(2)
        case .failure(.storeStateUnknown(let m)):
            printError("error: \(m); whether this batch is in the store is unknown: read it back (`authz serve` loads it) before syncing again")
            throw ExitCode(2)
        case .failure(.syncsRefused(let m)):
            printError("error: refused, nothing changed: \(m)")
            throw ExitCode(2)
        }
    }
}

/// A progress bar on a terminal; nothing otherwise (the summary line says it all).
final class Progress {
    let total: Int
    let tty = isatty(STDERR_FILENO) == 1
    let start = Date()
    init(total: Int) { self.total = total }

    func advance(to done: Int) {
        guard tty, total > 0 else { return }
        let f = Double(done) / Double(total)
        let width = 30
        let bar = String(repeating: "#", count: Int(f * Double(width))) + String(repeating: "-", count: width - Int(f * Double(width)))
        let rate = Double(done) / max(Date().timeIntervalSince(start), 1e-9)
        FileHandle.standardError.write(Data(String(format: "\r[%@] %3.0f%% %d/%d records %.0f records/s", bar, f * 100, done, total, rate).utf8))
    }

    func finish() {
        if tty { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
