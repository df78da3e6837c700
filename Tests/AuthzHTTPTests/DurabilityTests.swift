import Dispatch
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The repository (for the shipped policy) and the built `authz` executable, which sits next
/// to the test bundle (`.build/debug/authz`; `swift build` or `swift build --build-tests`
/// builds it, and `make test` runs `swift build` before `swift test`).
enum Built {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let policy = repository.appendingPathComponent("policies/daytona.yaml").path

    static var authz: String? {
        var places = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
                      Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
        places.append(repository.appendingPathComponent(".build/debug"))
        for dir in places {
            let path = dir.appendingPathComponent("authz").path
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
               FileManager.default.isExecutableFile(atPath: path) {
                return path
            }
        }
        return nil
    }

    static func executable() throws -> String {
        try #require(authz, "the `authz` executable is not built next to the tests (\(CommandLine.arguments[0])); run `swift build` first")
    }
}

/// A temporary directory, removed by `remove()`.
struct Scratch {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("authz-durability-\(UUID().uuidString)")
    init() throws { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    func write(_ name: String, _ text: String) throws -> String {
        try text.write(toFile: path(name), atomically: true, encoding: .utf8)
        return path(name)
    }
    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// `authz` run to completion: exit status and output.
struct Ran {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `authz` with `arguments` and waits for it (killing it after a generous hang guard).
func runAuthz(_ arguments: [String], environment: [String: String] = [:], in scratch: Scratch) throws -> Ran {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try Built.executable())
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env["AUTHZ_ADMIN_TOKEN"] = nil
    env["AUTHZ_CHECK_TOKEN"] = nil
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let tag = UUID().uuidString
    let out = scratch.path("run-\(tag).out"), err = scratch.path("run-\(tag).err")
    _ = FileManager.default.createFile(atPath: out, contents: nil)
    _ = FileManager.default.createFile(atPath: err, contents: nil)
    p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
    p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: err))
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let deadline = ContinuousClock.now + .seconds(180)
    while p.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
    if p.isRunning { kill(p.processIdentifier, SIGKILL) }
    p.waitUntilExit()
    return Ran(status: p.terminationStatus,
               stdout: (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
               stderr: (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
}

/// A real `authz serve` process on a port the kernel chose (read from its log line
/// `listening on http://127.0.0.1:PORT`), ready (`/readyz` 200) when `init` returns.
final class ServeProcess: @unchecked Sendable {
    static let token = "durable-admin-token"
    let process = Process()
    let log: String
    private(set) var port = 0
    var http: HTTPClient { HTTPClient(port: port) }

    init(store: String, in scratch: Scratch, extra: [String] = [], environment: [String: String] = [:], waitForReady: Bool = true) throws {
        log = scratch.path("serve-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.executableURL = URL(fileURLWithPath: try Built.executable())
        // Syncs at normal priority (`--sync-idle-limit 0`): these tests are about what a kill
        // leaves on disk, and an idle-class sync in a machine busy with other tests (or a
        // build) could wait longer than the client's 10 s receive timeout before it runs.
        // BackgroundPriorityTests cover the idle class.
        process.arguments = ["serve", "--port", "0", "--threads", "2", "--store", store, "--policy", Built.policy,
                             "--sync-idle-limit", "0"] + extra
        var env = ProcessInfo.processInfo.environment
        env["AUTHZ_ADMIN_TOKEN"] = Self.token
        env["AUTHZ_CHECK_TOKEN"] = nil
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        do {
            port = try waitForPort()
            if waitForReady { try waitUntilReady() }
        } catch {
            kill9()
            throw error
        }
    }

    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    private func waitForPort() throws -> Int {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            let text = logText
            if let range = text.range(of: #"listening on http://127\.0\.0\.1:[0-9]+"#, options: .regularExpression),
               let port = Int(text[range].split(separator: ":").last!), port != 0 {
                return port
            }
            guard process.isRunning else { throw SocketError(description: "authz serve exited: \(text)") }
            usleep(10_000)
        }
        throw SocketError(description: "authz serve logged no port: \(logText)")
    }

    /// Polls `/readyz` until 200; returns its first ready answer's revision.
    @discardableResult
    func waitUntilReady() throws -> Int {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline {
            if let r = try? http.get("/readyz"), r.status == 200, let revision = r.json["revision"] as? Int { return revision }
            guard process.isRunning else { throw SocketError(description: "authz serve exited: \(logText)") }
            usleep(5_000)
        }
        throw SocketError(description: "authz serve never became ready: \(logText)")
    }

    /// SIGKILL: no graceful stop, no flush, nothing.
    func kill9() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    func sync(_ lines: String, query: String = "") throws -> HTTPResponse {
        try http.sync(lines, query: query, token: Self.token)
    }
}

/// Members `<prefix>0..<count>` of org `big`, as the complete state (a replace body).
private func bigState(_ prefix: String, _ count: Int) -> String {
    var s = #"{"kind":"org","id":"big"}"# + "\n"
    s.reserveCapacity(count * 90)
    for i in 0..<count {
        s += #"{"kind":"member","org":"big","user":"\#(prefix)\#(i)","role":"member","assignments":["developer"]}"# + "\n"
    }
    return s
}

@Suite("Durability: the real server process, killed and restarted", .serialized)
struct DurabilityTests {
    @Test func everyAcknowledgedBatchSurvivesSIGKILL() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let store = scratch.path("data/authz.sqlite")
        var server = try ServeProcess(store: store, in: scratch)
        defer { server.kill9() }
        #expect(try server.http.readyRevision() == 0)

        // Several batches, each acknowledged; the last one is followed at once by SIGKILL.
        var acknowledged: [Int] = []
        func ack(_ r: HTTPResponse) {
            #expect(r.status == 200, "\(r.text)")
            acknowledged.append(r.json["revision"] as? Int ?? -1)
        }
        ack(try server.sync(syncSeed))
        ack(try server.sync(#"{"kind":"member","org":"acme","user":"u4","role":"member","assignments":["developer"]}"#))
        ack(try server.sync("""
        {"kind":"user","op":"delete","id":"u2"}
        {"kind":"member","org":"beta","user":"u1","role":"owner"}
        """))
        ack(try server.sync(#"{"kind":"api_key","id":"k4","org":"acme","user":"u4","permissions":["write:sandboxes"]}"#))
        ack(try server.sync(#"{"kind":"member","org":"acme","user":"u5","role":"member"}"#, query: "?if_revision=4"))
        #expect(acknowledged == [1, 2, 3, 4, 5])
        let checks = seedChecks + [
            ("user:u4", "create", "sandbox:s", "acme"),
            ("api_key:k4", "create", "sandbox:s", "acme"),
            ("user:u5", "read", "sandbox:s", "acme"),
            ("user:u1", "delete", "sandbox:s", "beta"),
        ]
        let before = try server.http.answers(checks)
        #expect(before.revision == 5)
        // The last batch is there: u5 is a member, u2 is gone.
        #expect(try server.http.allowed("user:u5", "read", "sandbox:s", "acme"))
        #expect(try !server.http.allowed("user:u2", "read", "sandbox:s", "acme"))

        // SIGHUP reloads the policy through the writer: same data, same revision.
        kill(server.process.processIdentifier, SIGHUP)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline,
              !(try server.http.get("/metrics").text.contains(#"authz_policy_reloads_total{result="success"} 1"#)) {
            usleep(10_000)
        }
        #expect(try server.http.get("/metrics").text.contains(#"authz_policy_reloads_total{result="success"} 1"#))
        let reloaded = try server.http.answers(checks)
        #expect(reloaded.revision == 5)
        #expect(reloaded.answers == before.answers)
        server.kill9()

        server = try ServeProcess(store: store, in: scratch)
        let after = try server.http.answers(checks)
        #expect(after.revision == 5)
        #expect(after.answers == before.answers)
        #expect(try server.http.subjects("acme", "read", "sandbox:s") == ["user:u1", "user:u3", "user:u4", "user:u5"])

        // The restarted server goes on from there, and a batch right before the next kill
        // survives it too.
        let next = try server.sync(#"{"kind":"member","op":"delete","org":"acme","user":"u3"}"#, query: "?if_revision=5")
        #expect(next.json["revision"] as? Int == 6)
        server.kill9()
        server = try ServeProcess(store: store, in: scratch)
        #expect(try server.http.readyRevision() == 6)
        #expect(try server.http.subjects("acme", "read", "sandbox:s") == ["user:u1", "user:u4", "user:u5"])
    }

    /// A large replace is killed while in flight: once right after its body is sent (while
    /// the server decodes and validates), once as soon as the store's WAL grows (while the
    /// transaction writes), and once the moment its answer arrives. After each restart the
    /// state is exactly the revision before or exactly the new one, and the new one whenever
    /// the client saw it acknowledged.
    @Test func aSyncKilledInFlightIsAllOrNothing() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let store = scratch.path("authz.sqlite")
        var server = try ServeProcess(store: store, in: scratch)
        defer { server.kill9() }
        let base = 500
        #expect(try server.sync(bigState("old", base), query: "?mode=replace").status == 200)

        let size = 60_000
        var state = (revision: 1, prefix: "old", count: base)
        for (attempt, prefix) in ["a", "b", "c"].enumerated() {
            let body = Array(bigState(prefix, size).utf8)
            let request = HTTPClient.encode("POST", "/v1/sync?mode=replace", body: body, headers: [
                "Content-Type": "application/x-ndjson", "Authorization": "Bearer \(ServeProcess.token)",
            ], close: true)
            // A replace writes a new file next to the store and renames it over the store;
            // the store's own WAL grows only when it replaces in place.
            let wal = store + "-wal", newFile = store + ".new"
            func fileSize(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }
            let walBefore = fileSize(wal)
            let sent = DispatchSemaphore(value: 0)
            let finished = DispatchSemaphore(value: 0)
            let answer = Locked<HTTPResponse?>(nil)
            let port = server.port
            Thread {
                defer { finished.signal() }
                guard let socket = try? RawSocket(port: port, receiveTimeout: 120) else {
                    sent.signal()
                    return
                }
                let ok = (try? socket.send(request)) != nil
                sent.signal()
                if ok, let r = try? socket.readResponse() { answer.withLock { $0 = r } }
            }.start()
            sent.wait()
            if attempt == 2 {
                // Kill the moment the answer is in: it must have been durable before it was sent.
                finished.wait()
                #expect(answer.withLock { $0?.status } == 200)
                finished.signal()
            } else if attempt == 1 {
                // Wait for the transaction to start writing (or for the answer).
                let deadline = ContinuousClock.now + .seconds(60)
                while ContinuousClock.now < deadline && answer.withLock({ $0 == nil }) {
                    if fileSize(wal) > walBefore || fileSize(newFile) > 0 { break }
                    usleep(500)
                }
            }
            server.kill9()
            finished.wait()
            let acknowledged = answer.withLock { $0 }.map { $0.status == 200 } ?? false

            server = try ServeProcess(store: store, in: scratch)
            let revision = try #require(try server.http.readyRevision())
            let members = try server.http.subjects("big", "read", "sandbox:s")
            let old = (revision: state.revision, prefix: state.prefix, count: state.count)
            let new = (revision: state.revision + 1, prefix: prefix, count: size)
            #expect(revision == old.revision || revision == new.revision, "attempt \(attempt): revision \(revision)")
            if acknowledged { #expect(revision == new.revision, "an acknowledged replace was lost") }
            let expected = revision == new.revision ? new : old
            let other = revision == new.revision ? old : new
            #expect(members.count == expected.count, "attempt \(attempt) at revision \(revision): \(members.count) members")
            #expect(members.allSatisfy { $0.hasPrefix("user:\(expected.prefix)") })
            #expect(try server.http.allowed("user:\(expected.prefix)0", "create", "sandbox:s", "big"))
            #expect(try server.http.allowed("user:\(expected.prefix)\(expected.count - 1)", "create", "sandbox:s", "big"))
            #expect(try !server.http.allowed("user:\(other.prefix)0", "read", "sandbox:s", "big"))
            state = expected
        }
        // The store still takes batches after the kills.
        let r = try server.sync(#"{"kind":"member","org":"big","user":"late","role":"member"}"#, query: "?if_revision=\(state.revision)")
        #expect(r.status == 200, "\(r.text)")
        #expect(try server.http.allowed("user:late", "read", "sandbox:s", "big"))
    }

    /// A replace is written into a new file and renamed over the store. The server is killed
    /// at each step of that (by itself, `AUTHZ_STORE_CRASH_AT`): with the new file written,
    /// with the old WAL emptied and the store closed, and right after the rename (before the
    /// directory is synced and anything acknowledged). The restarted server has exactly the
    /// old state before the rename and exactly the new one after it, leaves nothing of the
    /// new file behind, and takes a replace again.
    @Test(arguments: ["new-file-written", "old-wal-emptied", "renamed"])
    func aReplaceKilledAroundItsRenameIsAllOrNothing(point: String) throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let store = scratch.path("authz.sqlite")
        var server = try ServeProcess(store: store, in: scratch)
        defer { server.kill9() }
        #expect(try server.sync(bigState("old", 300), query: "?mode=replace").status == 200)
        // Applied batches after it sit in the old store's WAL, which the swap must not lose
        // (before the rename) nor carry into the new file (after it).
        #expect(try server.sync(#"{"kind":"member","org":"big","user":"wal","role":"member"}"#).status == 200)
        server.kill9()

        server = try ServeProcess(store: store, in: scratch, environment: ["AUTHZ_STORE_CRASH_AT": point])
        let answer = try? server.sync(bigState("new", 2_000), query: "?mode=replace")
        #expect(answer == nil, "answered although it should have been killed at `\(point)`: \(answer?.text ?? "")")
        if answer != nil { server.kill9() }  // it did not crash: do not wait for it
        server.process.waitUntilExit()
        #expect(server.process.terminationReason == .uncaughtSignal && server.process.terminationStatus == SIGKILL)

        server = try ServeProcess(store: store, in: scratch)
        let revision = try #require(try server.http.readyRevision())
        let members = try server.http.subjects("big", "read", "sandbox:s")
        if point == "renamed" {
            #expect(revision == 3)
            #expect(members.count == 2_000 && members.allSatisfy { $0.hasPrefix("user:new") })
        } else {
            #expect(revision == 2)
            #expect(members.count == 301 && members.contains("user:wal") && members.allSatisfy { $0.hasPrefix("user:old") || $0 == "user:wal" })
        }
        #expect(!FileManager.default.fileExists(atPath: store + ".new"))
        let again = try server.sync(bigState("again", 100), query: "?mode=replace&if_revision=\(revision)")
        #expect(again.status == 200, "\(again.text)")
        #expect(try server.http.subjects("big", "read", "sandbox:s").count == 100)
        server.kill9()
        server = try ServeProcess(store: store, in: scratch)
        #expect(try server.http.readyRevision() == revision + 1)
        #expect(try server.http.allowed("user:again99", "create", "sandbox:s", "big"))
    }

    /// While a server has the store open, `authz sync --store` on it is refused (it would
    /// race the server's writes, and a replace renames a new file over the store), and
    /// changes nothing; once the server is gone it works.
    @Test func aStoreInUseByAServerRefusesOfflineSync() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let store = scratch.path("authz.sqlite")
        var server = try ServeProcess(store: store, in: scratch)
        defer { server.kill9() }
        #expect(try server.sync(syncSeed).status == 200)
        let replaced = try scratch.write("replace.jsonl", """
        {"kind":"org","id":"acme"}
        {"kind":"member","org":"acme","user":"u7","role":"owner"}
        """)
        for mode in [["--replace"], []] {
            let refused = try runAuthz(["sync", "--store", store, "--policy", Built.policy] + mode + [replaced], in: scratch)
            #expect(refused.status == 2)
            #expect(refused.stderr.contains("in use by another process"), "\(refused.stderr)")
        }
        #expect(try server.http.readyRevision() == 1)
        #expect(try server.http.allowed("user:u2", "create", "sandbox:s", "acme"))
        server.kill9()

        let ok = try runAuthz(["sync", "--store", store, "--policy", Built.policy, "--replace", replaced], in: scratch)
        #expect(ok.status == 0, "\(ok.stderr)")
        server = try ServeProcess(store: store, in: scratch)
        #expect(try server.http.readyRevision() == 2)
        #expect(try server.http.subjects("acme", "read", "sandbox:s") == ["user:u7"])
    }

    /// `serve --data` seeds an empty store before `/readyz` turns 200: the first ready answer
    /// already has the seed, and so does `/v1/sync` (attached by then).
    @Test func seedingHappensBeforeReady() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let seed = try scratch.write("seed.jsonl", bigState("s", 20_000))
        let server = try ServeProcess(store: scratch.path("authz.sqlite"), in: scratch, extra: ["--data", seed])
        defer { server.kill9() }
        // `init` returned at the first 200 of /readyz; that answer's revision:
        let first = try server.http.readyRevision()
        #expect(first == 1)
        #expect(try server.http.allowed("user:s19999", "create", "sandbox:s", "big"))
        #expect(try server.sync(#"{"kind":"member","org":"big","user":"t","role":"member"}"#).status == 200)
    }

    @Test func offlineSyncIntoAStoreThenServe() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let store = scratch.path("boot/authz.sqlite")
        let seed = try scratch.write("seed.jsonl", syncSeed)
        let ok = try runAuthz(["sync", "--store", store, "--policy", Built.policy, seed], in: scratch)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("revision 1"), "\(ok.stdout)")

        // Invalid input: exit 1, the store untouched.
        let bad = try scratch.write("bad.jsonl", """
        {"kind":"member","org":"acme","user":"u9","role":"member"}
        {"kind":"member","org":"nowhere","user":"u9","role":"member"}
        """)
        let refused = try runAuthz(["sync", "--store", store, "--policy", Built.policy, bad], in: scratch)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("bad.jsonl:2"), "\(refused.stderr)")
        // Into a store that does not exist yet: refused without making it, nor its folder.
        for mode in [[], ["--replace"]] {
            let none = try runAuthz(["sync", "--store", scratch.path("never/authz.sqlite"), "--policy", Built.policy] + mode + [bad], in: scratch)
            #expect(none.status == 1)
            #expect(none.stderr.contains("bad.jsonl:1: field `org`: unknown org `acme`"), "\(none.stderr)")
            #expect(!FileManager.default.fileExists(atPath: scratch.path("never")))
        }
        let replaced = try scratch.write("replace.jsonl", """
        {"kind":"org","id":"acme"}
        {"kind":"member","org":"acme","user":"u1","role":"owner"}
        {"kind":"member","org":"acme","user":"u7","role":"member"}
        """)
        let conflict = try runAuthz(["sync", "--store", store, "--policy", Built.policy, "--replace", "--if-revision", "0", replaced], in: scratch)
        #expect(conflict.status == 2)

        let server = try ServeProcess(store: store, in: scratch)
        defer { server.kill9() }
        #expect(try server.http.readyRevision() == 1)
        #expect(try server.http.allowed("user:u2", "create", "sandbox:s", "acme"))
        #expect(try !server.http.allowed("user:u9", "read", "sandbox:s", "acme"))
        #expect(try server.http.subjects("acme", "read", "sandbox:s") == ["user:u1", "user:u2", "user:u3"])
        server.kill9()

        // A replace offline, then the server sees exactly it.
        let replace = try runAuthz(["sync", "--store", store, "--policy", Built.policy, "--replace", replaced], in: scratch)
        #expect(replace.status == 0, "\(replace.stderr)")
        let again = try ServeProcess(store: store, in: scratch)
        defer { again.kill9() }
        #expect(try again.http.readyRevision() == 2)
        #expect(try again.http.subjects("acme", "read", "sandbox:s") == ["user:u1", "user:u7"])
        #expect(try !again.http.allowed("user:u2", "read", "sandbox:s", "beta"))
    }

    /// A token variable with a space at either end is refused at start (exit 64), rather than
    /// served as a token no `Authorization` header can present.
    @Test func serveRefusesATokenVariableWithSurroundingWhitespace() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        for (name, value) in [("AUTHZ_CHECK_TOKEN", " secret"), ("AUTHZ_ADMIN_TOKEN", "secret\n"), ("AUTHZ_CHECK_TOKEN", "  ")] {
            let ran = try runAuthz(["serve", "--port", "0", "--store", scratch.path("s.sqlite"), "--policy", Built.policy],
                                   environment: [name: value], in: scratch)
            #expect(ran.status == 64, "\(name)=\(value.debugDescription): \(ran.stderr)")
            #expect(ran.stderr.contains("\(name) begins or ends with whitespace"), "\(ran.stderr)")
        }
    }

    @Test func syncCommandExitStatus() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let server = try ServeProcess(store: scratch.path("authz.sqlite"), in: scratch)
        defer { server.kill9() }
        let url = "http://127.0.0.1:\(server.port)"
        let token = ["AUTHZ_ADMIN_TOKEN": ServeProcess.token]
        let seed = try scratch.write("seed.jsonl", syncSeed)

        // 0: done, in batches of 5 (13 records: 3 batches, 3 revisions).
        let ok = try runAuthz(["sync", "--server", url, "--batch-size", "5", seed], environment: token, in: scratch)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("revision 3"), "\(ok.stdout)")
        #expect(try server.http.readyRevision() == 3)
        let answers = try server.http.answers(seedChecks)

        // 1: invalid input, found locally; nothing is sent.
        let bad = try scratch.write("bad.jsonl", """
        {"kind":"member","org":"acme","user":"u9","role":"member"}
        {"kind":"member","org":"acme","user":"u9","role":"member",
        {"kind":"team","id":"t"}
        """)
        let invalid = try runAuthz(["sync", "--server", url, bad], environment: token, in: scratch)
        #expect(invalid.status == 1)
        #expect(invalid.stderr.contains("bad.jsonl:2"), "\(invalid.stderr)")
        #expect(invalid.stderr.contains("bad.jsonl:3"), "\(invalid.stderr)")
        // 1 too when the server finds it (an unknown org), naming the input's line.
        let unknownOrg = try scratch.write("unknown-org.jsonl", """
        {"kind":"member","org":"acme","user":"u9","role":"member"}
        {"kind":"member","org":"nowhere","user":"u9","role":"member"}
        """)
        let refused = try runAuthz(["sync", "--server", url, unknownOrg], environment: token, in: scratch)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("unknown-org.jsonl:2"), "\(refused.stderr)")

        // 2: a wrong token, and a token file with the wrong token.
        let wrong = try runAuthz(["sync", "--server", url, seed], environment: ["AUTHZ_ADMIN_TOKEN": "nope"], in: scratch)
        #expect(wrong.status == 2)
        #expect(wrong.stderr.contains("401"), "\(wrong.stderr)")
        let tokenFile = try scratch.write("token", "nope\n")
        #expect(try runAuthz(["sync", "--server", url, "--token-file", tokenFile, seed], in: scratch).status == 2)
        // 2: a conflict.
        let conflict = try runAuthz(["sync", "--server", url, "--if-revision", "1", seed], environment: token, in: scratch)
        #expect(conflict.status == 2)
        #expect(conflict.stderr.contains("revision_conflict"), "\(conflict.stderr)")

        // 2: unreachable (a port nobody listens on), after its retries.
        let closed = try closedPort()
        let unreachable = try runAuthz(["sync", "--server", "http://127.0.0.1:\(closed)", "--retries", "2", seed],
                                       environment: token, in: scratch)
        #expect(unreachable.status == 2)
        #expect(unreachable.stderr.contains("unreachable"), "\(unreachable.stderr)")

        // None of the failures changed anything.
        let after = try server.http.answers(seedChecks)
        #expect(after.revision == 3)
        #expect(after.answers == answers.answers)

        // Re-sending the same file is harmless; a token file works; --replace is one batch.
        let rightFile = try scratch.write("right-token", ServeProcess.token + "\n")
        let again = try runAuthz(["sync", "--server", url, "--token-file", rightFile, "--replace", seed], in: scratch)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.contains("revision 4"), "\(again.stdout)")
        let resent = try server.http.answers(seedChecks)
        #expect(resent.revision == 4)
        #expect(resent.answers == answers.answers)

        // --gzip: the same records, compressed on the way (the server logs the encoding).
        let padded = try scratch.write("padded.jsonl", paddedSeed)
        let gzipped = try runAuthz(["sync", "--server", url, "--gzip", "--replace", padded], environment: token, in: scratch)
        #expect(gzipped.status == 0, "\(gzipped.stderr)")
        #expect(gzipped.stdout.contains("revision 5, upserted 33"), "\(gzipped.stdout)")
        #expect(server.logText.contains(" gzip commit="), "\(server.logText)")
        #expect(try server.http.answers(seedChecks).answers == answers.answers)
        let misused = try runAuthz(["sync", "--store", scratch.path("other.sqlite"), "--gzip", padded], in: scratch)
        #expect(misused.status == 64, "\(misused.stderr)")
        #expect(misused.stderr.contains("--gzip compresses what is sent to a server"), "\(misused.stderr)")

        // 1, with the server finding the error in a later batch: the batches before it stay
        // applied, and the command says so (and from where nothing was).
        let partial = try scratch.write("partial.jsonl", """
        {"kind":"member","org":"acme","user":"u9","role":"member"}
        {"kind":"member","org":"nowhere","user":"u9","role":"member"}
        """)
        let half = try runAuthz(["sync", "--server", url, "--batch-size", "1", partial], environment: token, in: scratch)
        #expect(half.status == 1)
        #expect(half.stderr.contains("partial.jsonl:2: field `org`: unknown org `nowhere`"), "\(half.stderr)")
        #expect(half.stderr.contains("note: the record before this batch was applied (revision 6); none from \(partial):2 on"),
                "\(half.stderr)")
        #expect(try server.http.readyRevision() == 6)

        // 2, with an answer the command cannot read after an earlier batch was applied: the
        // server may have applied the batch, so the command cannot say none from it was.
        let confused = try FakeSyncServer(takesGzip: false, garbledFrom: 1)
        defer { confused.stop() }
        let unread = try runAuthz(["sync", "--server", "http://127.0.0.1:\(confused.port)", "--batch-size", "1", partial],
                                  environment: token, in: scratch)
        #expect(unread.status == 2)
        #expect(unread.stderr.contains("unexpected answer from the server"), "\(unread.stderr)")
        #expect(unread.stderr.contains("note: the record before this batch was applied (revision 7); whether the batch from \(partial):2 on was applied is unknown"),
                "\(unread.stderr)")
        #expect(!unread.stderr.contains("none from"), "\(unread.stderr)")

        // A replace from an empty file and another: the server's line numbers map to the
        // second file's own (an empty input adds no line to the body).
        let empty = try scratch.write("empty.jsonl", "")
        let third = try scratch.write("third.jsonl", """
        {"kind":"org","id":"acme"}
        {"kind":"user","id":"u9"}
        {"kind":"member","org":"nowhere","user":"u9","role":"member"}
        """)
        let located = try runAuthz(["sync", "--server", url, "--replace", empty, third], environment: token, in: scratch)
        #expect(located.status == 1)
        #expect(located.stderr.contains("third.jsonl:3: field `org`"), "\(located.stderr)")
        #expect(!located.stderr.contains("note:"), "\(located.stderr)")
        #expect(try server.http.readyRevision() == 6)
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
private func closedPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SocketError(description: "socket: \(errno)") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let rc = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
            bind(fd, p, len) == 0 ? getsockname(fd, p, &len) : -1
        }
    }
    guard rc == 0 else { throw SocketError(description: "bind: \(errno)") }
    return Int(UInt16(bigEndian: addr.sin_port))
}
