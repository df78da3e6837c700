import AuthzCore
@testable import AuthzHTTP
@testable import AuthzStore
import Dispatch
import Foundation
import Synchronization
import Testing

/// A live server backed by a durable store in a temporary directory, its writer attached as
/// `authz serve` attaches it: `/v1/sync` goes through the writer, which publishes to the server.
final class SyncServer: Sendable {
    static let admin = "admin-secret"
    let server: AuthzServer
    let writer: MembershipSync
    let loader: SwitchableLoader
    let directory: URL
    var storePath: String { directory.appendingPathComponent("authz.sqlite").path }
    var port: Int { server.port }
    var http: HTTPClient { HTTPClient(port: port) }

    init(threads: Int = 2, maxSyncBody: Int? = nil, syncIdleLimit: Duration? = nil) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("authz-sync-\(UUID().uuidString)")
        var c = ServerConfiguration()
        c.host = "127.0.0.1"
        c.port = 0
        c.threads = threads
        c.connectionTimeout = 5
        c.adminToken = Self.admin
        if let maxSyncBody { c.maxSyncBodySize = maxSyncBody }
        if let syncIdleLimit { c.syncIdleLimit = syncIdleLimit }
        let loader = SwitchableLoader(.success(Fixtures.policy()))
        self.loader = loader
        let server = AuthzServer(configuration: c, directory: Directory(policy: Fixtures.policy()), ready: false,
                                 policyLoader: { loader.load() })
        self.server = server
        try server.start()
        let store = try MembershipStore(path: directory.appendingPathComponent("authz.sqlite").path)
        writer = try MembershipSync(store: store, policy: Fixtures.policy()) { d, revision in
            server.publish(d, revision: UInt64(revision))
        }
        server.attach(writer)
    }

    func stop() {
        server.shutdown(gracePeriod: .seconds(2))
        try? FileManager.default.removeItem(at: directory)
    }

    /// `POST /v1/sync` with JSON Lines.
    func sync(_ lines: String, query: String = "", token: String? = SyncServer.admin,
              contentType: String? = "application/x-ndjson") throws -> HTTPResponse {
        try http.sync(lines, query: query, token: token, contentType: contentType)
    }

    /// Syncs and requires success; returns the new revision.
    @discardableResult
    func synced(_ lines: String, query: String = "", sourceLocation: SourceLocation = #_sourceLocation) throws -> Int {
        let r = try sync(lines, query: query)
        #expect(r.status == 200, "sync refused: \(r.text)", sourceLocation: sourceLocation)
        return try #require(r.json["revision"] as? Int, sourceLocation: sourceLocation)
    }
}

extension HTTPClient {
    func sync(_ lines: String, query: String = "", token: String? = SyncServer.admin,
              contentType: String? = "application/x-ndjson") throws -> HTTPResponse {
        var h: [String: String] = [:]
        if let contentType { h["Content-Type"] = contentType }
        if let token { h["Authorization"] = "Bearer \(token)" }
        return try request("POST", "/v1/sync\(query)", body: Array(lines.utf8), headers: h)
    }

    /// `GET /v1/check`: (allowed, reason, revision); a non-200 answer is an error.
    func decide(_ subject: String, _ action: String, _ resource: String, _ org: String) throws -> Decided {
        let r = try get("/v1/check?subject=\(subject)&action=\(action)&resource=\(resource)&org=\(org)")
        guard r.status == 200, let allowed = r.json["allowed"] as? Bool, let reason = r.json["reason"] as? String,
              let revision = r.json["revision"] as? Int else {
            throw SocketError(description: "check \(subject) \(action) \(resource) \(org): \(r.status) \(r.text)")
        }
        return Decided(allowed: allowed, reason: reason, revision: revision)
    }

    func allowed(_ subject: String, _ action: String, _ resource: String, _ org: String) throws -> Bool {
        try decide(subject, action, resource, org).allowed
    }

    /// The revision `/readyz` reports (nil while not ready).
    func readyRevision() throws -> Int? {
        let r = try get("/readyz")
        return r.status == 200 ? r.json["revision"] as? Int : nil
    }

    /// `GET /v1/subjects`: the users who may take `action` on `resource` in `org`.
    func subjects(_ org: String, _ action: String, _ resource: String) throws -> [String] {
        let r = try get("/v1/subjects?org=\(org)&action=\(action)&resource=\(resource)")
        guard r.status == 200, let s = r.json["subjects"] as? [String] else {
            throw SocketError(description: "subjects: \(r.status) \(r.text)")
        }
        return s
    }

    /// A fixed set of checks through `POST /v1/check/batch`: every answer and the revision.
    func answers(_ checks: [(String, String, String, String)]) throws -> (answers: [String], revision: Int) {
        let items = checks.map { #"{"subject":"\#($0.0)","action":"\#($0.1)","resource":"\#($0.2)","org":"\#($0.3)"}"# }
        let r = try post("/v1/check/batch", json: #"{"checks":[\#(items.joined(separator: ","))]}"#)
        guard r.status == 200, let results = r.json["results"] as? [[String: Any]], let revision = r.json["revision"] as? Int else {
            throw SocketError(description: "batch: \(r.status) \(r.text)")
        }
        return (results.map { "\($0["allowed"] as? Bool ?? false) \($0["reason"] as? String ?? "error")" }, revision)
    }
}

/// A value shared between threads (a class, so escaping closures can capture it).
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

struct Decided: Equatable {
    var allowed: Bool
    var reason: String
    var revision: Int
}

/// acme: u1 owner, u2 developer, u3 holds the custom role `cleaner` (delete:sandboxes);
/// beta: u2 owner. Keys k2 (acme) and kb (beta) of u2; an invitation offering `cleaner`.
let syncSeed = """
{"kind":"org","id":"acme"}
{"kind":"org","id":"beta"}
{"kind":"user","id":"u1","email":"u1@example.com","email_verified":true}
{"kind":"user","id":"u2","email":"u2@example.com","email_verified":true}
{"kind":"user","id":"u3","email":"u3@example.com","email_verified":true}
{"kind":"role","org":"acme","id":"cleaner","permissions":["delete:sandboxes"]}
{"kind":"member","org":"acme","user":"u1","role":"owner"}
{"kind":"member","org":"acme","user":"u2","role":"member","assignments":["developer"]}
{"kind":"member","org":"acme","user":"u3","role":"member","assignments":["cleaner"]}
{"kind":"member","org":"beta","user":"u2","role":"owner"}
{"kind":"api_key","id":"k2","org":"acme","user":"u2","permissions":["write:sandboxes"]}
{"kind":"api_key","id":"kb","org":"beta","user":"u2","permissions":["write:sandboxes"]}
{"kind":"invitation","id":"i1","org":"acme","email":"new@example.com","role":"member","assignments":["cleaner"],"status":"pending"}
"""

/// Checks whose answers any change to the seed would move.
let seedChecks: [(String, String, String, String)] = [
    ("user:u1", "read", "sandbox:s", "acme"),
    ("user:u2", "create", "sandbox:s", "acme"),
    ("user:u3", "create", "sandbox:s", "acme"),
    ("user:u3", "delete", "sandbox:s", "acme"),
    ("user:u9", "read", "sandbox:s", "acme"),
    ("user:u2", "delete", "sandbox:s", "beta"),
    ("user:u1", "read", "sandbox:s", "beta"),
    ("api_key:k2", "create", "sandbox:s", "acme"),
    ("api_key:kb", "create", "sandbox:s", "beta"),
]

@Suite("Membership sync over HTTP")
struct SyncTests {
    /// libmicrohttpd aborts the process if its daemon is stopped with a connection suspended,
    /// which is where a sync's connection waits while the sync runs: a shutdown whose grace
    /// period ends during a sync must wait for it, and the client must get its answer.
    @Test func aShutdownDuringASyncWaitsForItAndAnswers() throws {
        let live = try SyncServer()
        defer { try? FileManager.default.removeItem(at: live.directory) }
        var lines = [#"{"kind":"org","id":"big"}"#]
        for i in 0..<30_000 {
            lines.append(#"{"kind":"user","id":"u\#(i)","email":"u\#(i)@example.com","email_verified":true}"#)
            lines.append(#"{"kind":"member","org":"big","user":"u\#(i)","role":"\#(i == 0 ? "owner" : "member")"}"#)
        }
        final class Outcome: @unchecked Sendable { var response: HTTPResponse?; var error: (any Error)? }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let body = lines.joined(separator: "\n")
        let http = live.http
        DispatchQueue.global().async {
            do { outcome.response = try http.sync(body) } catch { outcome.error = error }
            done.signal()
        }
        // Until the sync's connection is suspended (its work running), then stop at once.
        let deadline = Date().addingTimeInterval(30)
        while live.server.engine.syncGate.withLock({ $0.suspended }) == 0 && Date() < deadline { usleep(1_000) }
        #expect(live.server.engine.syncGate.withLock { $0.suspended } == 1)
        live.server.shutdown(gracePeriod: .zero)
        #expect(done.wait(timeout: .now() + 30) == .success)
        #expect(outcome.error == nil)
        #expect(outcome.response?.status == 200)
        #expect(outcome.response?.json["upserted"] as? Int == 60_001)
    }

    /// Once a shutdown has closed the gate, a sync that arrives on a kept-alive connection is
    /// refused before any work, rather than suspended where the stopping daemon would abort.
    @Test func aSyncArrivingWhileTheServerStopsIsRefusedAndChangesNothing() throws {
        let live = try SyncServer()
        defer { live.stop() }
        live.server.engine.syncGate.withLock { $0.closed = true }
        let r = try live.sync(syncSeed)
        #expect(r.status == 503)
        #expect(r.errorCode == "stopping")
        #expect(try live.http.readyRevision() == 0)
        #expect(live.server.engine.syncGate.withLock { $0.suspended } == 0)
    }

    /// The writer publishes to the server and the server holds the writer: once stopped and
    /// let go, both are freed (each server holds a pthread key or two, and a process has 1024).
    @Test func aStoppedServerAndItsWriterAreFreed() throws {
        weak var server: AuthzServer?
        weak var engine: Engine?
        weak var writer: MembershipSync?
        try {
            let live = try SyncServer()
            defer { live.stop() }
            (server, engine, writer) = (live.server, live.server.engine, live.writer)
            #expect(try live.synced(syncSeed) == 1)
            #expect(try live.http.readyRevision() == 1)
        }()
        #expect(server == nil)
        #expect(engine == nil)
        #expect(writer == nil)
        // Also a server that was never started, then shut down.
        weak var unstarted: AuthzServer?
        weak var itsWriter: MembershipSync?
        try {
            let server = AuthzServer(configuration: ServerConfiguration(), directory: Directory(policy: Fixtures.policy()), ready: false,
                                     policyLoader: { .success(Fixtures.policy()) })
            let store = try MembershipStore(path: FileManager.default.temporaryDirectory
                .appendingPathComponent("authz-unstarted-\(UUID().uuidString)/authz.sqlite").path)
            let writer = try MembershipSync(store: store, policy: Fixtures.policy()) { d, r in server.publish(d, revision: UInt64(r)) }
            server.attach(writer)
            (unstarted, itsWriter) = (server, writer)
            server.shutdown(gracePeriod: .zero)
        }()
        #expect(unstarted == nil)
        #expect(itsWriter == nil)
    }

    /// A replace that failed after its rename (the store may hold it or not) is not answered
    /// "nothing changed": 500 `store_state_unknown`, for it and every later sync, while checks
    /// keep answering from the data acknowledged before.
    @Test func aSyncWhoseStoreStateIsUnknownIsSaidSoAndLaterSyncsAreRefused() throws {
        let live = try SyncServer()
        defer { live.stop() }
        #expect(try live.synced(syncSeed) == 1)
        live.writer.store.failing.withLock { $0 = .afterRename }
        let replace = try live.sync(#"{"kind":"org","id":"solo"}"#, query: "?mode=replace")
        #expect(replace.status == 500)
        #expect(replace.errorCode == "store_state_unknown")
        live.writer.store.failing.withLock { $0 = nil }
        let later = try live.sync(#"{"kind":"org","id":"later"}"#)
        #expect(later.status == 500)
        #expect(later.errorCode == "store_state_unknown")
        let message = ((later.json["error"] as? [String: Any])?["message"] as? String) ?? ""
        #expect(message.contains("this sync changed nothing"))
        #expect(try live.http.readyRevision() == 1)
        let check = try live.http.get("/v1/check?subject=user:u1&action=read&resource=sandbox:s&org=acme")
        #expect(check.status == 200)
        #expect(check.json["revision"] as? Int == 1)
    }

    @Test func applyThenCheck() throws {
        let live = try SyncServer()
        defer { live.stop() }
        let http = live.http
        #expect(try http.readyRevision() == 0)
        #expect(try !http.allowed("user:u2", "create", "sandbox:s", "acme"))

        let first = try live.sync(syncSeed)
        #expect(first.status == 200)
        #expect(first.json["revision"] as? Int == 1)
        #expect(first.json["upserted"] as? Int == 13)
        #expect(first.json["deleted"] as? Int == 0)
        #expect(try http.decide("user:u2", "create", "sandbox:s", "acme") == Decided(allowed: true, reason: "assignment", revision: 1))
        #expect(try http.decide("user:u3", "create", "sandbox:s", "acme") == Decided(allowed: false, reason: "missing_permission", revision: 1))
        #expect(try http.decide("user:u3", "delete", "sandbox:s", "acme").allowed)
        #expect(try http.decide("api_key:k2", "create", "sandbox:s", "acme") == Decided(allowed: true, reason: "api_key", revision: 1))

        // A second batch changes one member and adds one; the rest stays.
        let second = try live.sync("""
        {"kind":"member","org":"acme","user":"u3","role":"member","assignments":["developer","cleaner"]}
        {"kind":"member","org":"acme","user":"u4","role":"member"}
        {"kind":"member","op":"delete","org":"acme","user":"u2"}
        """, query: "?mode=apply")
        #expect(second.status == 200)
        #expect(second.json["revision"] as? Int == 2)
        #expect(second.json["upserted"] as? Int == 2)
        #expect(second.json["deleted"] as? Int == 1)
        #expect(try http.decide("user:u3", "create", "sandbox:s", "acme") == Decided(allowed: true, reason: "assignment", revision: 2))
        #expect(try http.decide("user:u4", "read", "sandbox:s", "acme") == Decided(allowed: true, reason: "membership", revision: 2))
        #expect(try http.decide("user:u2", "read", "sandbox:s", "acme") == Decided(allowed: false, reason: "not_member", revision: 2))
        #expect(try http.allowed("user:u2", "delete", "sandbox:s", "beta"))
        #expect(try http.readyRevision() == 2)

        // Re-sending the same batch is harmless: same answers, next revision.
        #expect(try live.synced(syncSeed) == 3)
        #expect(try http.allowed("user:u2", "create", "sandbox:s", "acme"))
        #expect(try http.allowed("user:u4", "read", "sandbox:s", "acme"))
    }

    @Test func replaceRemovesEverythingNotInTheBody() throws {
        let live = try SyncServer()
        defer { live.stop() }
        let http = live.http
        try live.synced(syncSeed)
        let r = try live.sync("""
        {"kind":"org","id":"acme"}
        {"kind":"member","org":"acme","user":"u3","role":"owner"}
        {"kind":"member","org":"acme","user":"u5","role":"member","assignments":["developer"]}
        """, query: "?mode=replace")
        #expect(r.status == 200, "\(r.text)")
        #expect(r.json["revision"] as? Int == 2)
        #expect(r.json["upserted"] as? Int == 3)
        // 13 seed records; `acme` and the member u3 stay (changed): 11 removed.
        #expect(r.json["deleted"] as? Int == 11)
        #expect(try http.decide("user:u1", "read", "sandbox:s", "acme") == Decided(allowed: false, reason: "not_member", revision: 2))
        #expect(try http.decide("user:u2", "delete", "sandbox:s", "beta") == Decided(allowed: false, reason: "not_member", revision: 2))
        #expect(try http.decide("api_key:k2", "read", "sandbox:s", "acme").reason == "unknown_key")
        #expect(try http.decide("user:u3", "delete", "sandbox:s", "acme") == Decided(allowed: true, reason: "owner", revision: 2))
        #expect(try http.allowed("user:u5", "create", "sandbox:s", "acme"))
        #expect(try http.subjects("acme", "read", "sandbox:s") == ["user:u3", "user:u5"])

        // A replace with an empty body empties everything.
        let empty = try live.sync("", query: "?mode=replace")
        #expect(empty.status == 200)
        #expect(empty.json["deleted"] as? Int == 3)
        #expect(try http.decide("user:u3", "read", "sandbox:s", "acme") == Decided(allowed: false, reason: "not_member", revision: 3))
        #expect(try MembershipStore(path: live.storePath).load().records.isEmpty)
    }

    @Test func deletesAndCascades() throws {
        let live = try SyncServer()
        defer { live.stop() }
        let http = live.http
        try live.synced(syncSeed)

        // Deleting a user removes every membership and key of theirs, in every org.
        let userDelete = try live.sync(#"{"kind":"user","op":"delete","id":"u2"}"#)
        #expect(userDelete.status == 200)
        #expect(userDelete.json["deleted"] as? Int == 1)
        #expect(try http.decide("user:u2", "read", "sandbox:s", "acme") == Decided(allowed: false, reason: "not_member", revision: 2))
        #expect(try http.decide("user:u2", "read", "sandbox:s", "beta").reason == "not_member")
        #expect(try http.decide("api_key:k2", "read", "sandbox:s", "acme").reason == "unknown_key")
        #expect(try http.decide("api_key:kb", "read", "sandbox:s", "beta").reason == "unknown_key")
        #expect(try http.allowed("user:u1", "read", "sandbox:s", "acme"))
        #expect(try http.subjects("acme", "read", "sandbox:s") == ["user:u1", "user:u3"])

        // Deleting an org removes its members, roles, keys and invitations; other orgs stay.
        try live.synced("""
        {"kind":"member","org":"beta","user":"u1","role":"owner"}
        {"kind":"api_key","id":"kb2","org":"beta","user":"u1","permissions":["write:sandboxes"]}
        """)
        let orgDelete = try live.sync(#"{"kind":"org","op":"delete","id":"acme"}"#)
        #expect(orgDelete.status == 200)
        #expect(orgDelete.json["revision"] as? Int == 4)
        #expect(try http.decide("user:u1", "read", "sandbox:s", "acme") == Decided(allowed: false, reason: "not_member", revision: 4))
        #expect(try !http.allowed("user:u3", "delete", "sandbox:s", "acme"))
        #expect(try http.subjects("acme", "read", "sandbox:s") == [])
        #expect(try http.allowed("user:u1", "delete", "sandbox:s", "beta"))
        #expect(try http.allowed("api_key:kb2", "create", "sandbox:s", "beta"))

        // The cascade left nothing behind: recreating the org brings back no member, and its
        // old role id can be defined and deleted again.
        try live.synced("""
        {"kind":"org","id":"acme"}
        {"kind":"role","org":"acme","id":"cleaner","permissions":["write:sandboxes"]}
        {"kind":"role","op":"delete","org":"acme","id":"cleaner"}
        """)
        #expect(try !http.allowed("user:u3", "read", "sandbox:s", "acme"))
        #expect(try http.subjects("acme", "read", "sandbox:s") == [])

        // The store holds what the server serves.
        let stored = try MembershipStore(path: live.storePath).load()
        #expect(stored.revision == 5)
        #expect(Set(stored.records.map(\.record)) == Set(live.writer.current.directory.records()))
    }

    @Test func ifRevisionGuardsAgainstASecondWriter() throws {
        let live = try SyncServer()
        defer { live.stop() }
        let http = live.http
        #expect(try live.synced(syncSeed, query: "?if_revision=0") == 1)
        let stale = try live.sync(#"{"kind":"member","org":"acme","user":"u9","role":"member"}"#, query: "?if_revision=0")
        #expect(stale.status == 409)
        #expect(stale.errorCode == "revision_conflict")
        #expect(try http.decide("user:u9", "read", "sandbox:s", "acme") == Decided(allowed: false, reason: "not_member", revision: 1))
        let ahead = try live.sync(#"{"kind":"member","org":"acme","user":"u9","role":"member"}"#, query: "?mode=replace&if_revision=7")
        #expect(ahead.status == 409)
        #expect(try http.allowed("user:u1", "read", "sandbox:s", "acme"))
        #expect(try live.sync("", query: "?if_revision=abc").status == 400)
        #expect(try live.sync("", query: "?if_revision=-1").status == 400)
        #expect(try http.readyRevision() == 1)

        #expect(try live.synced(#"{"kind":"member","org":"acme","user":"u9","role":"member"}"#, query: "?if_revision=1") == 2)
        #expect(try http.decide("user:u9", "read", "sandbox:s", "acme") == Decided(allowed: true, reason: "membership", revision: 2))
    }

    @Test func minRevisionRefusesStaleDecisions() throws {
        let live = try SyncServer()
        defer { live.stop() }
        let http = live.http
        try live.synced(syncSeed)
        let q = "/v1/check?subject=user:u9&action=read&resource=sandbox:s&org=acme"
        let body = #"{"subject":"user:u9","action":"read","resource":"sandbox:s","org":"acme","min_revision":2}"#
        let batch = #"{"min_revision":2,"checks":[{"subject":"user:u9","action":"read","resource":"sandbox:s","org":"acme"}]}"#

        let get = try http.get(q + "&min_revision=2")
        #expect(get.status == 409)
        #expect(get.errorCode == "stale_revision")
        let post = try http.post("/v1/check", json: body)
        #expect(post.status == 409)
        #expect(post.errorCode == "stale_revision")
        let posted = try http.post("/v1/check/batch", json: batch)
        #expect(posted.status == 409)
        #expect(posted.errorCode == "stale_revision")
        // Reached: answered.
        #expect(try http.get(q + "&min_revision=1").status == 200)
        #expect(try http.get(q + "&min_revision=x").status == 400)

        try live.synced(#"{"kind":"member","org":"acme","user":"u9","role":"member"}"#)
        let after = try http.get(q + "&min_revision=2")
        #expect(after.status == 200)
        #expect(after.json["allowed"] as? Bool == true)
        #expect(after.json["revision"] as? Int == 2)
        let postAfter = try http.post("/v1/check", json: body)
        #expect(postAfter.status == 200)
        #expect(postAfter.json["allowed"] as? Bool == true)
        let batchAfter = try http.post("/v1/check/batch", json: batch)
        #expect(batchAfter.status == 200)
        #expect(batchAfter.json["revision"] as? Int == 2)
        #expect((batchAfter.json["results"] as? [[String: Any]])?.first?["allowed"] as? Bool == true)
    }

    /// An id is kept as sent: a U+FEFF written as bytes at its start (once dropped, so that
    /// `\xEF\xBB\xBFu9` made a membership for `u9`) is the id's, as the escaped `\ufeff` is.
    @Test func anIdIsKeptByteForByte() throws {
        let live = try SyncServer()
        defer { live.stop() }
        let http = live.http
        try live.synced(syncSeed)
        func reason(_ user: String) throws -> String? {
            let r = try http.post("/v1/check", json: #"{"subject":"user:\#(user)","action":"read","resource":"sandbox:s","org":"acme"}"#)
            return r.json["reason"] as? String
        }
        try live.synced("{\"kind\":\"member\",\"org\":\"acme\",\"user\":\"\u{FEFF}u9\",\"role\":\"member\"}")
        #expect(try reason(#"\ufeffu9"#) == "membership")
        #expect(try reason("u9") == "not_member")
        // The escaped spelling names the same membership.
        try live.synced(#"{"kind":"member","op":"delete","org":"acme","user":"\ufeffu9"}"#)
        #expect(try reason(#"\ufeffu9"#) == "not_member")
    }

    /// A batch with one bad line among good ones; in apply mode the bad line is line 3 (line 2
    /// is blank, and blank lines count).
    struct BadBatch: Sendable, CustomTestStringConvertible {
        var name: String
        var line: String
        var field: String?
        var message: String
        var testDescription: String { name }
    }

    static let badBatches: [BadBatch] = [
        .init(name: "malformed JSON", line: #"{"kind":"org","id":"#, field: nil, message: "malformed JSON"),
        .init(name: "unknown kind", line: #"{"kind":"team","id":"t1"}"#, field: "kind", message: "unknown kind `team`"),
        .init(name: "unknown permission", line: #"{"kind":"role","org":"acme","id":"pilot","permissions":["write:sandboxes","fly:planes"]}"#,
              field: "permissions[1]", message: "unknown permission `fly:planes`"),
        .init(name: "unknown assignment", line: #"{"kind":"member","org":"acme","user":"u3","role":"member","assignments":["wizard"]}"#,
              field: "assignments[0]", message: "unknown assignment `wizard`"),
        .init(name: "member of an unknown org", line: #"{"kind":"member","org":"nowhere","user":"u3","role":"member"}"#,
              field: "org", message: "unknown org `nowhere`"),
        .init(name: "deleting a custom role still assigned", line: #"{"kind":"role","op":"delete","org":"acme","id":"cleaner"}"#,
              field: "id", message: "still assigned"),
        .init(name: "invalid invitation status", line: #"{"kind":"invitation","id":"i2","org":"acme","email":"x@example.com","role":"member","status":"maybe"}"#,
              field: "status", message: "unknown status `maybe`"),
        .init(name: "an op given twice", line: #"{"kind":"member","org":"acme","user":"u3","role":"member","op":"delete","op":"upsert"}"#,
              field: "op", message: "duplicate field `op`"),
        .init(name: "assignments given twice", line: #"{"kind":"member","org":"acme","user":"u3","role":"member","assignments":["cleaner"],"assignments":[]}"#,
              field: "assignments", message: "duplicate field `assignments`"),
        .init(name: "invalid timestamp", line: #"{"kind":"api_key","id":"k9","org":"acme","user":"u1","permissions":[],"expires_at":"tomorrow"}"#,
              field: "expires_at", message: "not an RFC 3339 timestamp"),
    ]

    @Test(arguments: badBatches)
    func anInvalidBatchChangesNothing(_ bad: BadBatch) throws {
        let live = try SyncServer()
        defer { live.stop() }
        let http = live.http
        try live.synced(syncSeed)
        let before = try http.answers(seedChecks)
        #expect(before.revision == 1)

        for mode in ["apply", "replace"] {
            // Good lines around the bad one, each of which would move an answer if applied.
            // A replace body is the whole state: the seed (13 lines), then the same lines.
            let prefix = mode == "replace" ? syncSeed + "\n" : ""
            let badLine = mode == "replace" ? 16 : 3
            let body = prefix + """
            {"kind":"member","org":"acme","user":"u9","role":"member","assignments":["developer"]}

            \(bad.line)
            {"kind":"user","op":"delete","id":"u2"}
            """
            let r = try live.sync(body, query: "?mode=\(mode)")
            #expect(r.status == 400, "\(mode): \(r.text)")
            #expect(r.errorCode == "invalid_data")
            let errors = (r.json["error"] as? [String: Any])?["errors"] as? [[String: Any]] ?? []
            #expect(errors.count == 1, "\(mode): \(r.text)")
            let e = try #require(errors.first)
            #expect(e["line"] as? Int == badLine)
            #expect(e["field"] as? String == bad.field)
            if bad.field == nil { #expect(e["field"] is NSNull) }
            #expect((e["message"] as? String)?.contains(bad.message) == true, "\(e)")

            let after = try http.answers(seedChecks)
            #expect(after.revision == before.revision)
            #expect(after.answers == before.answers)
        }
        let stored = try MembershipStore(path: live.storePath).load()
        #expect(stored.revision == 1)
        #expect(Set(stored.records.map(\.record)) == Set(live.writer.current.directory.records()))
    }

    @Test func everyErrorOfABatchIsNamed() throws {
        let live = try SyncServer()
        defer { live.stop() }
        try live.synced(syncSeed)
        let r = try live.sync("""
        {"kind":"member","org":"nowhere","user":"u1","role":"member"}
        {"kind":"member","org":"acme","user":"u1","role":"member"}
        {"kind":"member","org":"acme","user":"u1","role":"boss"}
        """)
        #expect(r.status == 400)
        let errors = (r.json["error"] as? [String: Any])?["errors"] as? [[String: Any]] ?? []
        #expect(errors.map { $0["line"] as? Int } == [1, 3])
        #expect(errors.map { $0["field"] as? String } == ["org", "role"])
        #expect(try live.http.readyRevision() == 1)
    }

    @Test func syncNeedsTheAdminTokenAndJSONLines() throws {
        let live = try SyncServer()
        defer { live.stop() }
        let http = live.http
        try live.synced(syncSeed)
        let change = #"{"kind":"member","org":"acme","user":"u9","role":"owner"}"#

        let none = try live.sync(change, token: nil)
        #expect(none.status == 401)
        #expect(none.errorCode == "unauthorized")
        #expect(try live.sync(change, token: "admin-secreT").status == 401)
        #expect(try live.sync(change, token: "").status == 401)
        // The check token is not the admin token.
        #expect(try live.sync(change, token: "check-secret").status == 401)

        for type in ["application/json", "text/plain", "application/x-ndjsonx"] {
            let r = try live.sync(change, contentType: type)
            #expect(r.status == 400, "\(type)")
            #expect(r.errorCode == "unsupported_media_type")
        }
        #expect(try live.sync(change, contentType: nil).status == 400)
        #expect(try live.sync(change, query: "?mode=merge").status == 400)
        #expect(try http.get("/v1/sync").status == 405)

        #expect(try http.readyRevision() == 1)
        #expect(try http.decide("user:u9", "read", "sandbox:s", "acme") == Decided(allowed: false, reason: "not_member", revision: 1))
        // Parameters on the content type are fine.
        #expect(try live.sync(change, contentType: "application/x-ndjson; charset=utf-8").status == 200)
        #expect(try http.allowed("user:u9", "read", "sandbox:s", "acme"))
    }

    @Test func aPolicyReloadKeepsTheSyncedData() throws {
        let live = try SyncServer()
        defer { live.stop() }
        let http = live.http
        try live.synced(syncSeed)
        try live.synced(#"{"kind":"member","org":"acme","user":"u4","role":"member"}"#)
        #expect(try http.decide("user:u4", "delete", "sandbox:s", "acme").reason == "missing_permission")

        // A policy under which any member may delete a sandbox.
        live.loader.set(.success(Fixtures.policy(Fixtures.definition(name: "lenient", deleteRequirement: .member))))
        let reload = try http.post("/v1/policy/reload", json: "", token: SyncServer.admin)
        #expect(reload.status == 200, "\(reload.text)")
        #expect(reload.json["policy"] as? String == "lenient")
        #expect(reload.json["revision"] as? Int == 2)
        #expect(try http.decide("user:u4", "delete", "sandbox:s", "acme") == Decided(allowed: true, reason: "membership", revision: 2))
        #expect(try http.allowed("user:u2", "create", "sandbox:s", "acme"))
        #expect(try http.allowed("api_key:k2", "create", "sandbox:s", "acme"))

        // A later sync applies to data bound to the new policy: it neither reverts the policy
        // nor loses the data synced before the reload.
        try live.synced(#"{"kind":"member","org":"acme","user":"u5","role":"member"}"#)
        #expect(try http.decide("user:u5", "delete", "sandbox:s", "acme") == Decided(allowed: true, reason: "membership", revision: 3))
        #expect(try http.decide("user:u4", "delete", "sandbox:s", "acme").allowed)
        #expect(try http.subjects("acme", "read", "sandbox:s") == ["user:u1", "user:u2", "user:u3", "user:u4", "user:u5"])

        // A policy the data does not fit (no `developer`) is refused; data and policy stay.
        var misfit = Fixtures.definition(name: "no-developer")
        misfit.assignments.removeLast()
        live.loader.set(.success(Fixtures.policy(misfit)))
        #expect(try http.post("/v1/policy/reload", json: "", token: SyncServer.admin).status == 422)
        #expect(try http.decide("user:u5", "delete", "sandbox:s", "acme") == Decided(allowed: true, reason: "membership", revision: 3))
        try live.synced(#"{"kind":"member","org":"acme","user":"u6","role":"member","assignments":["developer"]}"#)
        #expect(try http.allowed("user:u6", "create", "sandbox:s", "acme"))
        #expect(try http.allowed("user:u6", "delete", "sandbox:s", "acme"))
    }

    /// Batch k (k = 1...) adds member `n<k>` to org `grow`, moves `mover` between orgs `a` and
    /// `b` (in `a` at odd revisions, in `b` at even ones) and rewrites filler members, so that a
    /// half-applied batch or a decision from a revision other than the one reported is visible.
    /// Checkers ask both orgs in one batch and must see exactly one membership, on the side
    /// the reported revision says, and `n<k>` exactly when k <= revision.
    @Test func checksDuringSyncsSeeOnlyWholeRevisions() throws {
        let live = try SyncServer(threads: 3)
        defer { live.stop() }
        let batches = 24
        let fillers = 300
        #expect(try live.synced("""
        {"kind":"org","id":"a"}
        {"kind":"org","id":"b"}
        {"kind":"org","id":"grow"}
        {"kind":"org","id":"filler"}
        {"kind":"member","org":"a","user":"mover","role":"member"}
        """) == 1)

        let failures = Locked<[String]>([])
        let requests = Locked(0)
        let revisionsSeen = Locked<Set<Int>>([])
        let stop = Locked(false)
        let group = DispatchGroup()
        let port = live.port
        let checkers = 3
        for t in 0..<checkers {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                var socket: RawSocket?
                var last = 0
                var n = 0
                while !stop.withLock({ $0 }) {
                    n += 1
                    let probes = [1, batches / 2, batches, (n * 7 + t) % batches + 1]
                    var checks = [
                        #"{"subject":"user:mover","action":"read","resource":"sandbox:s","org":"a"}"#,
                        #"{"subject":"user:mover","action":"read","resource":"sandbox:s","org":"b"}"#,
                    ]
                    checks += probes.map { #"{"subject":"user:n\#($0)","action":"read","resource":"sandbox:s","org":"grow"}"# }
                    let body = Array(#"{"checks":[\#(checks.joined(separator: ","))]}"#.utf8)
                    do {
                        if socket == nil || n % 50 == 0 { socket = try RawSocket(port: port) }
                        try socket!.send(HTTPClient.encode("POST", "/v1/check/batch", body: body,
                                                           headers: ["Content-Type": "application/json"], close: false))
                        let r = try socket!.readResponse()
                        requests.withLock { $0 += 1 }
                        guard r.status == 200, let results = r.json["results"] as? [[String: Any]],
                              let revision = r.json["revision"] as? Int else {
                            failures.withLock { $0.append("status \(r.status): \(r.text)") }
                            continue
                        }
                        revisionsSeen.withLock { _ = $0.insert(revision) }
                        let allowed = results.map { $0["allowed"] as? Bool }
                        let k = revision - 1   // batches applied
                        var problems: [String] = []
                        if revision < last { problems.append("revision went back from \(last)") }
                        last = revision
                        if allowed[0] == allowed[1] { problems.append("mover in both or neither org: \(allowed[0] as Any) \(allowed[1] as Any)") }
                        if allowed[0] != (revision % 2 == 1) { problems.append("mover on the wrong side") }
                        for (i, p) in probes.enumerated() where allowed[2 + i] != (p <= k) {
                            problems.append("n\(p) allowed=\(allowed[2 + i] as Any)")
                        }
                        if !problems.isEmpty {
                            failures.withLock { $0.append("at revision \(revision): \(problems.joined(separator: "; "))") }
                        }
                    } catch {
                        failures.withLock { $0.append("request failed: \(error)") }
                        socket = nil
                    }
                }
            }
            thread.start()
        }

        for k in 1...batches {
            let (join, leave) = k % 2 == 1 ? ("b", "a") : ("a", "b")
            var lines = [
                #"{"kind":"member","org":"\#(join)","user":"mover","role":"member"}"#,
                #"{"kind":"member","org":"grow","user":"n\#(k)","role":"member"}"#,
            ]
            for f in 0..<fillers {
                lines.append(#"{"kind":"member","org":"filler","user":"f\#(f)","role":"member","assignments":[\#(k % 2 == 0 ? #""developer""# : "")]}"#)
            }
            lines.append(#"{"kind":"member","op":"delete","org":"\#(leave)","user":"mover"}"#)
            #expect(try live.synced(lines.joined(separator: "\n"), query: "?if_revision=\(k)") == k + 1)
            // Let the checkers run against this revision before the next batch.
            let target = requests.withLock { $0 } + checkers * 2
            let deadline = ContinuousClock.now + .seconds(10)
            while requests.withLock({ $0 }) < target && ContinuousClock.now < deadline { usleep(1_000) }
        }
        stop.withLock { $0 = true }
        group.wait()

        let problems = failures.withLock { $0 }
        #expect(problems.isEmpty, "\(problems.count) bad answers, first: \(problems.prefix(5))")
        #expect(requests.withLock { $0 } >= batches * checkers * 2)
        // The checkers saw many revisions, the last one included.
        let seen = revisionsSeen.withLock { $0 }
        #expect(seen.contains(batches + 1))
        #expect(seen.count > batches / 2)
    }
}
