import AuthzCore
@testable import AuthzHTTP
import Dispatch
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Tokens, reloads and hostile clients", .serialized)
struct AdminAndRobustnessTests {
    @Test func reloadNeedsTheAdminToken() throws {
        let live = try TestServer()
        defer { live.stop() }
        let http = live.client()
        let none = try http.post("/v1/policy/reload", json: "")
        #expect(none.status == 401)
        #expect(none.errorCode == "unauthorized")
        #expect(none.headers["www-authenticate"] == "Bearer")
        #expect(try http.post("/v1/policy/reload", json: "", token: "admin-secreT").status == 401)
        #expect(try http.post("/v1/policy/reload", json: "", token: "admin-secret-and-more").status == 401)
        let ok = try http.post("/v1/policy/reload", json: "", token: "admin-secret")
        #expect(ok.status == 200)
        #expect(ok.json["reloaded"] as? Bool == true)
        #expect(ok.json["policy"] as? String == "daytona-test")
        #expect(ok.json["revision"] as? Int == 2)
    }

    @Test func adminRoutesAreClosedWithoutAnAdminToken() throws {
        let live = try TestServer { $0.adminToken = nil }
        defer { live.stop() }
        let r = try live.client().post("/v1/policy/reload", json: "", token: "anything")
        #expect(r.status == 401)
    }

    @Test func checkTokenGuardsTheDecisionRoutesOnly() throws {
        let live = try TestServer { $0.checkToken = "check-secret" }
        defer { live.stop() }
        let http = live.client()
        let q = "/v1/check?subject=user:u1&action=read&resource=sandbox:sb1&org=acme"
        #expect(try http.get(q).status == 401)
        #expect(try http.get(q, token: "wrong").status == 401)
        #expect(try http.get(q, token: "check-secret").status == 200)
        #expect(try http.get("/v1/permissions?subject=user:u1&org=acme").status == 401)
        #expect(try http.get("/v1/subjects?org=acme&action=read&resource=sandbox:sb1").status == 401)
        #expect(try http.post("/v1/check/batch", json: #"{"checks":[]}"#).status == 401)
        #expect(try http.post("/v1/check/batch", json: #"{"checks":[]}"#, token: "check-secret").status == 200)
        #expect(try http.get("/healthz").status == 200)
        #expect(try http.get("/metrics").status == 200)
    }

    @Test func aBrokenPolicyKeepsTheOldOneServing() throws {
        let live = try TestServer()
        defer { live.stop() }
        let http = live.client()
        live.loader.set(.failure(PolicyLoadError(errors: ["policy.yaml:3:5: unknown permission `fly`", "policy.yaml:9:1: duplicate action `read`"])))
        let r = try http.post("/v1/policy/reload", json: "", token: "admin-secret")
        #expect(r.status == 422)
        #expect(r.errorCode == "policy_invalid")
        let errors = (r.json["error"] as? [String: Any])?["errors"] as? [String]
        #expect(errors?.count == 2)
        let check = try http.get("/v1/check?subject=user:u3&action=delete&resource=sandbox:sb1&org=acme")
        #expect(check.json["reason"] as? String == "missing_permission")
        #expect(check.json["revision"] as? Int == 1)
        #expect(try http.get("/metrics").text.contains(#"authz_policy_reloads_total{result="failure"} 1"#))

        // A policy the data does not fit (it lacks the `developer` assignment) is refused too.
        var d = Fixtures.definition(name: "no-developer")
        d.assignments.removeLast()
        live.loader.set(.success(Fixtures.policy(d)))
        let misfit = try http.post("/v1/policy/reload", json: "", token: "admin-secret")
        #expect(misfit.status == 422)
        #expect(try http.get("/readyz").json["revision"] as? Int == 1)

        // A good one is swapped in.
        live.loader.set(.success(Fixtures.policy(Fixtures.definition(name: "lenient", deleteRequirement: .member))))
        #expect(try http.post("/v1/policy/reload", json: "", token: "admin-secret").status == 200)
        let after = try http.get("/v1/check?subject=user:u3&action=delete&resource=sandbox:sb1&org=acme")
        #expect(after.json["reason"] as? String == "membership")
        #expect(after.json["revision"] as? Int == 2)
    }

    /// Clients check without pause while the policy flips between two versions that answer
    /// one question differently: no request fails, and every answer agrees with the policy
    /// its revision was published with.
    @Test func concurrentChecksDuringReloads() throws {
        let live = try TestServer()
        defer { live.stop() }
        let strict = Fixtures.policy(Fixtures.definition(name: "strict"))
        let lenient = Fixtures.policy(Fixtures.definition(name: "lenient", deleteRequirement: .member))
        let allowedAt = Mutex<[Int: Bool]>([1: false])   // revision -> is u3 allowed to delete
        let done = Atomic<Bool>(false)
        let failures = Mutex<[String]>([])
        let answers = Mutex<[(revision: Int, allowed: Bool)]>([])

        let reloader = Thread {
            for i in 0..<20 {
                let lenientNow = i % 2 == 0
                live.loader.set(.success(lenientNow ? lenient : strict))
                // Record the mapping before clients can see the new revision.
                let next = Int(live.server.revision) + 1
                allowedAt.withLock { $0[next] = lenientNow }
                if case .failure(let e) = live.server.reloadPolicy() { failures.withLock { $0.append("reload: \(e)") } }
                usleep(2_000)
            }
            done.store(true, ordering: .releasing)
        }
        reloader.start()
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            let http = live.client()
            var n = 0
            while !done.load(ordering: .acquiring) || n < 20 {
                n += 1
                do {
                    let r = try http.get("/v1/check?subject=user:u3&action=delete&resource=sandbox:sb1&org=acme")
                    guard r.status == 200, let revision = r.json["revision"] as? Int, let allowed = r.json["allowed"] as? Bool else {
                        failures.withLock { $0.append("status \(r.status): \(r.text)") }
                        continue
                    }
                    let reason = r.json["reason"] as? String
                    if allowed != (reason == "membership") { failures.withLock { $0.append("mixed answer: \(r.text)") } }
                    answers.withLock { $0.append((revision, allowed)) }
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
        }
        #expect(failures.withLock { $0 } == [])
        let mapping = allowedAt.withLock { $0 }
        let all = answers.withLock { $0 }
        #expect(all.count >= 80)
        for a in all {
            #expect(mapping[a.revision] == a.allowed, "revision \(a.revision) answered allowed=\(a.allowed)")
        }
        #expect(live.server.revision == 21)
    }

    @Test func clientsHangingUpMidBodyAreCleanedUp() throws {
        let live = try TestServer()
        defer { live.stop() }
        for _ in 0..<20 {
            let socket = try RawSocket(port: live.port)
            try socket.send("POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"subject\":")
        }
        // The sockets are closed (deinit); the server notices and completes those requests.
        #expect(try live.client().get("/healthz").status == 200)
        let deadline = ContinuousClock.now + .seconds(10)
        while live.server.engine.inFlight.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline { usleep(10_000) }
        #expect(live.server.engine.inFlight.load(ordering: .relaxed) == 0)
    }

    @Test func aSlowClientDoesNotHoldUpOthersAndIsDisconnected() throws {
        let live = try TestServer { $0.connectionTimeout = 1; $0.threads = 1 }
        defer { live.stop() }
        let slow = try RawSocket(port: live.port, receiveTimeout: 15)
        try slow.send("GET /v1/check?subject=user:u1&act")
        // With a single thread, others are still answered while the slow one dawdles.
        for _ in 0..<5 {
            #expect(try live.client().get("/v1/check?subject=user:u1&action=read&resource=sandbox:sb1&org=acme").status == 200)
        }
        // The server closes the stalled connection itself (EOF, not our receive timeout).
        #expect(try slow.readToEnd().isEmpty)
    }

    @Test func garbageOnTheSocketDoesNotDisturbOthers() throws {
        let live = try TestServer()
        defer { live.stop() }
        var generator = SystemRandomNumberGenerator()
        for round in 0..<10 {
            let socket = try RawSocket(port: live.port)
            var bytes = (0..<(512 * (round + 1))).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if round % 2 == 0 { bytes = Array("GET /v1/check?".utf8) + bytes }
            try? socket.send(bytes + [13, 10, 13, 10])
            let answer = (try? socket.readToEnd()) ?? []
            if let r = HTTPClient.parse(answer, complete: true) { #expect(r.status >= 400 && r.status < 500) }
        }
        let weird = try live.client().get("/v1/check?subject=%00%ff%fe&action=%22&resource=a:%0a&org=%C3%28")
        #expect(weird.status == 400)
        #expect(weird.json["error"] != nil)
        let r = try live.client().get("/v1/check?subject=user:u2&action=delete&resource=sandbox:sb1&org=acme")
        #expect(r.json["allowed"] as? Bool == true)
    }

    @Test func shutdownFinishesAndStopsListening() throws {
        let live = try TestServer()
        let port = live.port
        #expect(try live.client().get("/healthz").status == 200)
        live.stop()
        #expect(throws: SocketError.self) { try HTTPClient(port: port).get("/healthz") }
    }

    @Test func startFailsClearlyOnABusyPort() throws {
        let live = try TestServer()
        defer { live.stop() }
        var c = ServerConfiguration()
        c.port = live.port
        let second = AuthzServer(configuration: c, directory: Fixtures.directory(), policyLoader: { .success(Fixtures.policy()) })
        #expect { try second.start() } throws: { error in
            (error as? ServerStartError)?.message.contains("in use") == true
        }
    }
}

/// A sync body's buffer is reserved from its declared length, within one largest body across
/// all requests: announcing lengths without sending them claims nothing beyond that.
@Suite struct BodyBudgetTests {
    @Test func reservationsStayWithinOneLargestBodyAndAreReturned() {
        let budget = BodyBudget(limit: 1000)
        var first: BodyBudget.Reservation? = budget.reserve(600)
        #expect(first != nil)
        #expect(budget.reserve(500) == nil)
        #expect(budget.current == 600)
        let second = budget.reserve(400)
        #expect(second != nil)
        #expect(budget.reserve(1) == nil)
        first = nil
        #expect(budget.current == 400)
        #expect(budget.reserve(600) != nil)   // freed at once: the temporary is gone
        #expect(budget.current == 400)
        withExtendedLifetime(second) {}
    }
}

/// The bodies of checks, batches and reloads are held within `maxBodyMemory` across all
/// connections: clients that announce large bodies and stall cannot make the server hold
/// more than that (each could otherwise hold `maxBodySize`, times the connection limit).
@Suite struct BodyMemoryTests {
    /// A batch body of at least `bytes` (valid JSON, `n` checks).
    static func batch(atLeast bytes: Int) -> String {
        let item = #"{"subject":"user:u2","action":"create","resource":"sandbox:s","org":"acme"}"#
        let n = bytes / (item.utf8.count + 1) + 1
        return #"{"checks":["# + Array(repeating: item, count: n).joined(separator: ",") + "]}"
    }

    static func header(_ route: String, length: Int?) -> String {
        "POST \(route) HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + (length.map { "Content-Length: \($0)\r\n" } ?? "Transfer-Encoding: chunked\r\n") + "\r\n"
    }

    /// Waits (up to 5 s) until `done` holds: the server frees a request's state just after
    /// its connection ends, on its own thread.
    static func eventually(_ done: () -> Bool) -> Bool {
        for _ in 0..<100 {
            if done() { return true }
            usleep(50_000)
        }
        return done()
    }

    /// A connection that sent `body` as a chunked batch in 8,000-byte chunks, without the last
    /// (empty) chunk.
    static func chunkedBatch(_ live: TestServer, _ body: [UInt8]) throws -> RawSocket {
        let chunked = try RawSocket(port: live.port)
        try chunked.send(Self.header("/v1/check/batch", length: nil))
        var at = 0
        while at < body.count {
            let piece = body[at..<min(at + 8_000, body.count)]
            try chunked.send(Array(String(piece.count, radix: 16).utf8) + Array("\r\n".utf8) + Array(piece) + Array("\r\n".utf8))
            at += piece.count
        }
        return chunked
    }

    /// A sample's value in `/metrics`.
    static func metric(_ live: TestServer, _ name: String) throws -> Double? {
        let text = try live.client().get("/metrics").text
        let line = text.split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return line.flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    /// A server whose bodies may take 100,000 bytes in all (64 KiB each), and a client that
    /// announced 60,000 bytes of batch, sent one and stalled: the server holds all 60,000.
    static func stalledServer() throws -> (live: TestServer, memory: BodyBudget, stalled: RawSocket) {
        let live = try TestServer { c in
            c.maxBodySize = 64 << 10
            c.maxBodyMemory = 100_000
        }
        let memory = live.server.engine.bodyMemory
        let stalled = try RawSocket(port: live.port)
        try stalled.send(Self.header("/v1/check/batch", length: 60_000) + "{")
        #expect(Self.eventually { memory.current == 60_000 })
        return (live, memory, stalled)
    }

    @Test func declaredLengthsAreHeldWithinTheBudgetAndGivenBack() throws {
        let (live, memory, stalled) = try Self.stalledServer()
        defer { live.stop() }

        // Another announcing 60,000 would pass 100,000: refused on its headers, before any
        // body is sent, with 503.
        let second = try RawSocket(port: live.port, receiveTimeout: 3)
        try second.send(Self.header("/v1/check/batch", length: 60_000))
        let refused = try second.readResponse()
        #expect(refused.status == 503)
        #expect(refused.errorCode == "overloaded")
        #expect(refused.headers["retry-after"] == "1")
        #expect(refused.text.contains("would pass --max-body-memory (100000 bytes)"))
        #expect(memory.current == 60_000)
        #expect(try Self.metric(live, "authz_http_body_memory_bytes") == 60_000)
        #expect(try Self.metric(live, "authz_http_body_memory_refused_total") == 1)

        // Small bodies are not counted: a check is answered all the same.
        let check = try live.client().post("/v1/check", json: #"{"subject":"user:u2","action":"create","resource":"sandbox:s","org":"acme"}"#)
        #expect(check.status == 200)
        #expect(check.json["allowed"] as? Bool == true)

        // The stalled client hangs up: its share comes back, and a large batch is read.
        shutdown(stalled.fd, Int32(SHUT_RDWR))
        #expect(Self.eventually { memory.current == 0 })
        let body = Self.batch(atLeast: 40_000)
        #expect(body.utf8.count > BodyMemory.free)
        let answered = try live.client().post("/v1/check/batch", json: body)
        #expect(answered.status == 200)
        #expect((answered.json["results"] as? [Any])?.count == body.components(separatedBy: "\"subject\"").count - 1)
        #expect(Self.eventually { memory.current == 0 })
    }

    @Test func aChunkedBodyThatWouldPassTheBudgetIsAnswered503AtItsEnd() throws {
        let (live, memory, stalled) = try Self.stalledServer()
        defer { live.stop() }

        // 50,000 bytes in chunks, within --max-body (no 413) but not within what is left.
        let body = Array(Self.batch(atLeast: 50_000).utf8)
        let chunked = try Self.chunkedBatch(live, body)
        // It held 24,000 on the way (past 16 KiB), could not double that, and dropped its
        // body: once it is refused (counted), what it held is back before the body ends.
        #expect(Self.eventually { (try? Self.metric(live, "authz_http_body_memory_refused_total")) == 1 && memory.current == 60_000 })
        try chunked.send("0\r\n\r\n")
        let r = try chunked.readResponse()
        #expect(r.status == 503)
        #expect(r.errorCode == "overloaded")
        shutdown(stalled.fd, Int32(SHUT_RDWR))
        #expect(Self.eventually { memory.current == 0 })
    }

    /// A chunked body past --max-body is 413 whether or not the budget has room: it could
    /// never be read, so "send it again" would be untrue.
    @Test func aChunkedBodyPastItsLimitIs413EvenWhenTheBudgetIsFull() throws {
        let (live, memory, stalled) = try Self.stalledServer()
        defer { live.stop() }
        let body = Array(Self.batch(atLeast: 70_000).utf8)   // over 64 KiB
        let chunked = try Self.chunkedBatch(live, body)
        try chunked.send("0\r\n\r\n")
        let r = try chunked.readResponse()
        #expect(r.status == 413)
        #expect(r.errorCode == "payload_too_large")
        shutdown(stalled.fd, Int32(SHUT_RDWR))
        #expect(Self.eventually { memory.current == 0 })
    }

    /// A policy reload ignores its body: it is neither kept nor counted, so check traffic
    /// filling the budget never refuses an administrator's reload.
    @Test func aReloadBodyIsNotHeld() throws {
        let (live, memory, stalled) = try Self.stalledServer()
        defer { live.stop() }
        let r = try live.client().request("POST", "/v1/policy/reload", body: [UInt8](repeating: 0x20, count: 50_000),
                                          headers: ["Authorization": "Bearer admin-secret"])
        #expect(r.status == 200, "\(r.text)")
        #expect(memory.current == 60_000)
        shutdown(stalled.fd, Int32(SHUT_RDWR))
    }
}

/// Takes that do not fit never make one that fits fail, however they interleave.
@Suite struct BodyBudgetTakeTests {
    @Test func aTakeThatFitsNeverFailsBesideTakesThatDoNot() {
        let budget = BodyBudget(limit: 1000)
        #expect(budget.take(300))
        let spins = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let done = DispatchGroup()
        for _ in 0..<2 {
            done.enter()
            Thread.detachNewThread {
                while !stop.load(ordering: .relaxed) {
                    if budget.take(800) { budget.give(800) }   // never fits beside the 300
                    spins.add(1, ordering: .relaxed)
                }
                done.leave()
            }
        }
        while spins.load(ordering: .relaxed) < 10_000 { sched_yield() }
        // 300 + 500 fits, and nothing else ever succeeds.
        var failures = 0
        for _ in 0..<1_000_000 {
            if budget.take(500) { budget.give(500) } else { failures += 1 }
        }
        stop.store(true, ordering: .relaxed)
        done.wait()
        #expect(failures == 0)
        #expect(budget.current == 300)
    }

}
