import Foundation
import Testing

/// Client input at the edges, found by an adversarial client (a helper's black-box run): each
/// test is what that client sent, and what it should have seen.
@Suite("Client input at the edges")
struct EdgeInputTests {
    private let check = "/v1/check?subject=user:u2&action=create&resource=sandbox:s&org=acme"

    /// JSON's 0 and 1 are numbers: `min_revision` 0 and 1 are revisions (Linux's
    /// JSONSerialization gives NSNumbers for which `is Bool` holds).
    @Test func postedMinRevisionZeroAndOneAreRevisions() throws {
        let live = try SyncServer()
        defer { live.stop() }
        try live.synced(syncSeed)
        let base = #""subject":"user:u2","action":"create","resource":"sandbox:s","org":"acme""#
        for value in ["0", "1", "1.0"] {
            let one = try live.http.post("/v1/check", json: "{\(base),\"min_revision\":\(value)}")
            #expect(one.status == 200, "\(value): \(one.text)")
            let batch = try live.http.post("/v1/check/batch", json: "{\"min_revision\":\(value),\"checks\":[{\(base)}]}")
            #expect(batch.status == 200, "\(value): \(batch.text)")
        }
        // Past 2^53 a Double would round: 2^53 + 1 is a revision not reached yet.
        #expect(try live.http.post("/v1/check", json: "{\(base),\"min_revision\":9007199254740993}").status == 409)
        #expect(try live.http.post("/v1/check", json: "{\(base),\"min_revision\":9223372036854775807}").status == 409)
        for value in ["true", "false", "1.5", "-1", "\"1\"", "9223372036854775808", "1e300"] {
            let r = try live.http.post("/v1/check", json: "{\(base),\"min_revision\":\(value)}")
            #expect(r.status == 400 && r.errorCode == "invalid_parameter", "\(value): \(r.text)")
        }
        #expect(try live.http.post("/v1/check", json: "{\(base),\"min_revision\":2}").status == 409)
    }

    @Test func aQueryMinRevisionIsDigitsWithinInt64() throws {
        let live = try SyncServer()
        defer { live.stop() }
        try live.synced(syncSeed)
        #expect(try live.http.get(check + "&min_revision=0000000000000000001").status == 200)
        #expect(try live.http.get(check + "&min_revision=9223372036854775807").status == 409)
        for bad in ["abcdefghijklmnopqrstuvwxyz", "99999999999999999999", "9223372036854775808", "1e3", "", "-1", "+1"] {
            let r = try live.http.get(check + "&min_revision=\(bad)")
            #expect(r.status == 400 && r.errorCode == "invalid_parameter", "\(bad): \(r.status) \(r.text)")
        }
    }

    /// Query bytes that are not UTF-8 are refused on every route that reads them, so that no
    /// answer quotes them into JSON and no route matches them differently from another.
    @Test func queryParametersMustBeUTF8() throws {
        let live = try SyncServer()
        defer { live.stop() }
        try live.synced(syncSeed)
        let bad: [(String, String)] = [
            ("/v1/check?subject=user:%ff&action=read&resource=sandbox:s&org=acme", "subject"),
            ("/v1/check?subject=user:u1&action=read&resource=sandbox:s&org=acme%c0%af", "org"),
            ("/v1/check?subject=user:u1&action=re%ed%a0%80ad&resource=sandbox:s&org=acme", "action"),
            ("/v1/check?subject=user:u1&action=read&resource=sandbox:%80&org=acme", "resource"),
            ("/v1/permissions?subject=user:x%ff&org=acme", "subject"),
            ("/v1/subjects?org=acme&action=read&resource=sandbox:%fe", "resource"),
        ]
        for (target, name) in bad {
            let r = try live.http.get(target)
            #expect(r.status == 400, "\(target): \(r.text)")
            #expect(r.errorCode == "invalid_parameter")
            #expect(r.text.contains("query parameter `\(name)` is not valid UTF-8"), "\(r.text)")
        }
        // Valid UTF-8 beyond ASCII is quoted back as it is, in valid JSON.
        let r = try live.http.get("/v1/check?subject=user:%C3%BC%E2%82%AC%F0%9F%98%80&action=read&resource=sandbox:s&org=acme")
        #expect(r.status == 200)
        let message = try #require(r.json["message"] as? String, "\(r.text)")
        #expect(message.contains("user:ü€😀"), "\(message)")
    }

    /// A check body is read as sent: a key given twice in one object is refused (Foundation
    /// kept the last, where a proxy may read the first), and a U+FEFF written as bytes stays
    /// part of its string (Foundation dropped one at a string's start, so `\u{FEFF}user:u1` was
    /// decided as `user:u1`).
    @Test func aCheckBodyIsReadAsSent() throws {
        let live = try SyncServer()
        defer { live.stop() }
        try live.synced(syncSeed)
        let rest = #""action":"delete","resource":"sandbox:s","org":"acme""#
        for body in [
            #"{"subject":"user:u2","subject":"user:u1",\#(rest)}"#,
            #"{"subject":"user:u2","sub\u006aect":"user:u1",\#(rest)}"#,
            #"{"subject":"user:u2","\u0073ubject":"user:u1",\#(rest)}"#,
        ] {
            let r = try live.http.post("/v1/check", json: body)
            #expect(r.status == 400 && r.errorCode == "invalid_json", "\(body): \(r.text)")
            #expect(r.text.contains("the key `subject` appears twice in one object"), "\(r.text)")
        }
        // Not in UTF-16 or UTF-32 either, which Foundation would read and the byte scans not.
        for encoding in [String.Encoding.utf16LittleEndian, .utf32BigEndian] {
            let body = #"{"subject":"user:nobody","subject":"user:u1",\#(rest)}"#.data(using: encoding)!
            let r = try live.http.request("POST", "/v1/check", body: Array(body), headers: ["Content-Type": "application/json"])
            #expect(r.status == 400 && r.errorCode == "invalid_json", "\(encoding): \(r.text)")
            #expect(r.text.contains("the request body is not UTF-8 text"), "\(r.text)")
        }
        let batch = try live.http.post("/v1/check/batch", json: #"{"checks":[{"subject":"user:u1",\#(rest)},{"org":"beta","subject":"user:u1",\#(rest)}]}"#)
        #expect(batch.status == 400 && batch.text.contains("the key `org` appears twice"), "\(batch.text)")
        // The same key in different objects is no repeat.
        let two = try live.http.post("/v1/check/batch", json: #"{"checks":[{"subject":"user:u1",\#(rest)},{"subject":"user:u3",\#(rest)}]}"#)
        #expect(two.status == 200, "\(two.text)")
        #expect((two.json["results"] as? [[String: Any]])?.compactMap { $0["allowed"] as? Bool } == [true, true])

        // Dropped where a run of a string's unescaped characters starts: at its beginning.
        let raw = try live.http.request("POST", "/v1/check", body: Array(#"{"subject":""#.utf8) + [0xEF, 0xBB, 0xBF]
                                           + Array(#"user:u1",\#(rest)}"#.utf8), headers: ["Content-Type": "application/json"])
        let escaped = try live.http.post("/v1/check", json: #"{"subject":"\ufeffuser:u1",\#(rest)}"#)
        #expect(raw.status == 400 && raw.errorCode == "invalid_subject", "\(raw.text)")
        #expect(escaped.status == 400 && escaped.errorCode == "invalid_subject", "\(escaped.text)")
    }

    /// RFC 9110: the scheme is case-insensitive, and one or more spaces follow it.
    @Test func theBearerSchemeIsCaseInsensitive() throws {
        let live = try SyncServer()
        defer { live.stop() }
        let change = Array(#"{"kind":"org","id":"acme"}"#.utf8)
        func sync(_ authorization: String) throws -> Int {
            try live.http.request("POST", "/v1/sync", body: change,
                                  headers: ["Authorization": authorization, "Content-Type": "application/x-ndjson"]).status
        }
        for good in ["Bearer \(SyncServer.admin)", "bearer \(SyncServer.admin)", "BEARER  \(SyncServer.admin)"] {
            #expect(try sync(good) == 200, "\(good)")
        }
        for bad in ["Bearer", "Bearer ", "Bearer\(SyncServer.admin)", "Basic \(SyncServer.admin)", "Bearer x\(SyncServer.admin)",
                    "Bearer \(SyncServer.admin) ", SyncServer.admin] {
            #expect(try sync(bad) == 401, "\(bad)")
        }
        #expect(try live.http.readyRevision() == 3)
    }

    /// `Content-Encoding` on two lines is one list, of which only the first line is at hand:
    /// refused, never half read.
    @Test func contentEncodingOnTwoLinesIsRefused() throws {
        let live = try SyncServer()
        defer { live.stop() }
        let body = Array(syncSeed.utf8)
        let head = "POST /v1/sync HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \(SyncServer.admin)\r\n"
            + "Content-Type: application/x-ndjson\r\nContent-Encoding: identity\r\nContent-Encoding: gzip\r\n"
            + "Content-Length: \(body.count)\r\n\r\n"
        let socket = try RawSocket(port: live.port)
        try socket.send(Array(head.utf8) + body)
        let r = try #require(HTTPClient.parse(try socket.readToEnd(), complete: true))
        #expect(r.status == 415, "\(r.text)")
        #expect(r.text.contains("`Content-Encoding` on 2 header lines is not supported on `/v1/sync`"), "\(r.text)")
        #expect(try live.http.readyRevision() == 0)
        // Counted under its own status.
        #expect(try live.http.get("/metrics").text.contains(#"authz_http_requests_total{route="/v1/sync",status="415"} 1"#))
    }

    /// The decoder keeps the first 100 errors; the message does not claim to know the rest.
    @Test func aBatchWithMoreErrorsThanListedSaysSo() throws {
        let live = try SyncServer()
        defer { live.stop() }
        let r = try live.sync(String(repeating: "x\n", count: 250))
        #expect(r.status == 400)
        let errors = try #require((r.json["error"] as? [String: Any])?["errors"] as? [Any])
        #expect(errors.count == 100)
        #expect(r.text.contains("(the first 100 are listed; there may be more)"), "\(r.text.prefix(300))")
        let few = try live.sync(String(repeating: "x\n", count: 3))
        #expect(few.text.contains("(and 2 more)"), "\(few.text.prefix(300))")
    }
}
