import AuthzCore
@testable import AuthzHTTP
import Foundation
import Testing

@Suite("HTTP API v1", .serialized)
struct RoutesTests {
    let live: TestServer
    var http: HTTPClient { live.client() }

    init() throws { live = try TestServer() }

    func check(_ subject: String, _ action: String, _ resource: String, _ org: String = "acme") throws -> HTTPResponse {
        try http.get("/v1/check?subject=\(subject)&action=\(action)&resource=\(resource)&org=\(org)")
    }

    @Test func getCheckAllowsAndDenies() throws {
        defer { live.stop() }
        let deny = try check("user:u3", "delete", "sandbox:sb1")
        #expect(deny.status == 200)
        #expect(deny.headers["content-type"] == "application/json")
        #expect(deny.json["allowed"] as? Bool == false)
        #expect(deny.json["reason"] as? String == "missing_permission")
        #expect((deny.json["message"] as? String)?.contains("`delete:sandboxes`") == true)
        #expect(deny.json["revision"] as? Int == 1)

        let developer = try check("user:u2", "delete", "sandbox:sb1")
        #expect(developer.json["allowed"] as? Bool == true)
        #expect(developer.json["reason"] as? String == "assignment")

        let owner = try check("user:u1", "delete", "sandbox:sb1")
        #expect(owner.json["reason"] as? String == "owner")

        let key = try check("api_key:k2", "delete", "sandbox:sb1")
        #expect(key.json["reason"] as? String == "missing_permission")
        let keyCreate = try check("api_key:k2", "create", "sandbox:sb1")
        #expect(keyCreate.json["reason"] as? String == "api_key")

        let suspended = try check("user:u2", "create", "sandbox:sb1", "frozen")
        #expect(suspended.json["reason"] as? String == "org_suspended")

        let outsider = try check("user:nobody", "read", "organization:acme")
        #expect(outsider.json["reason"] as? String == "not_member")
    }

    @Test func getCheckDecodesTheQuery() throws {
        defer { live.stop() }
        // Percent-encoded colon and a quote in an unknown subject: decoded, then escaped in JSON.
        let r = try http.get("/v1/check?subject=user%3Aa%22b&action=read&resource=sandbox%3Asb1&org=acme")
        #expect(r.status == 200)
        #expect(r.json["reason"] as? String == "not_member")
        #expect(r.text.contains(#"\""#) || !(r.text.contains("a\"b")))
    }

    @Test(arguments: [
        ("subject=user:u1&action=read&resource=sandbox:sb1", "invalid_parameter"),
        ("subject=bob&action=read&resource=sandbox:sb1&org=acme", "invalid_subject"),
        ("subject=user:u1&action=read&resource=sandbox&org=acme", "invalid_resource"),
        ("subject=user:u1&action=read&resource=sandbox:sb1&org=", "invalid_org"),
        ("subject=user:u1&action=&resource=sandbox:sb1&org=acme", "invalid_action"),
        ("subject=user:u1&action=read&resource=castle:c1&org=acme", "unknown_resource_type"),
        ("subject=user:u1&action=fly&resource=sandbox:sb1&org=acme", "unknown_action"),
    ])
    func getCheckRejectsMalformedRequests(query: String, code: String) throws {
        defer { live.stop() }
        let r = try http.get("/v1/check?\(query)")
        #expect(r.status == 400)
        #expect(r.errorCode == code)
        #expect(((r.json["error"] as? [String: Any])?["message"] as? String)?.isEmpty == false)
    }

    @Test func postCheck() throws {
        defer { live.stop() }
        let r = try http.post("/v1/check", json: #"{"subject":"user:u2","action":"delete","resource":"sandbox:sb1","org":"acme"}"#)
        #expect(r.status == 200)
        #expect(r.json["allowed"] as? Bool == true)
        #expect(r.json["revision"] as? Int == 1)

        let charset = try http.post("/v1/check", json: #"{"subject":"user:u3","action":"delete","resource":"sandbox:sb1","org":"acme"}"#,
                                    contentType: "application/json; charset=utf-8")
        #expect(charset.json["reason"] as? String == "missing_permission")
    }

    @Test(arguments: [
        (#"{"subject":"user:u2","action":"delete""#, "application/json", "invalid_json"),
        ("", "application/json", "invalid_json"),
        (#"[1,2]"#, "application/json", "invalid_parameter"),
        (#"{"subject":"user:u2","action":"delete","resource":"sandbox:sb1"}"#, "application/json", "invalid_parameter"),
        (#"{"subject":7,"action":"delete","resource":"sandbox:sb1","org":"acme"}"#, "application/json", "invalid_parameter"),
        (#"{"subject":"u2","action":"delete","resource":"sandbox:sb1","org":"acme"}"#, "application/json", "invalid_subject"),
        (#"subject=user:u2"#, "application/x-www-form-urlencoded", "unsupported_media_type"),
    ])
    func postCheckRejectsBadBodies(body: String, contentType: String, code: String) throws {
        defer { live.stop() }
        let r = try http.post("/v1/check", json: body, contentType: contentType)
        #expect(r.status == 400)
        #expect(r.errorCode == code)
    }

    @Test func postWithoutContentTypeIsRejected() throws {
        defer { live.stop() }
        let r = try http.request("POST", "/v1/check", body: Array("{}".utf8))
        #expect(r.status == 400)
        #expect(r.errorCode == "unsupported_media_type")
    }

    @Test func batchAnswersEveryItemInOrder() throws {
        defer { live.stop() }
        let body = """
            {"checks":[
              {"subject":"user:u2","action":"delete","resource":"sandbox:sb1","org":"acme"},
              {"subject":"user:u2","action":"fly","resource":"sandbox:sb1","org":"acme"},
              {"subject":"user:u3","action":"delete","resource":"sandbox:sb1","org":"acme"},
              "not an object",
              {"subject":"user:u1","action":"read"}
            ]}
            """
        let r = try http.post("/v1/check/batch", json: body)
        #expect(r.status == 200)
        let results = try #require(r.json["results"] as? [[String: Any]])
        #expect(results.count == 5)
        #expect(results[0]["allowed"] as? Bool == true)
        #expect((results[1]["error"] as? [String: Any])?["code"] as? String == "unknown_action")
        #expect(results[2]["reason"] as? String == "missing_permission")
        #expect((results[3]["error"] as? [String: Any])?["code"] as? String == "invalid_parameter")
        #expect(((results[4]["error"] as? [String: Any])?["message"] as? String)?.contains("`resource`") == true)
        #expect(r.json["revision"] as? Int == 1)
    }

    @Test func batchRejectsBadShapesAndTooManyItems() throws {
        defer { live.stop() }
        #expect(try http.post("/v1/check/batch", json: #"{"items":[]}"#).errorCode == "invalid_parameter")
        #expect(try http.post("/v1/check/batch", json: #"{"checks":"#).errorCode == "invalid_json")
        let empty = try http.post("/v1/check/batch", json: #"{"checks":[]}"#)
        #expect(empty.status == 200)
        #expect((empty.json["results"] as? [Any])?.isEmpty == true)
        let item = #"{"subject":"user:u2","action":"read","resource":"sandbox:sb1","org":"acme"}"#
        let tooMany = try http.post("/v1/check/batch", json: "{\"checks\":[\(Array(repeating: item, count: 1001).joined(separator: ","))]}")
        #expect(tooMany.status == 413)
        #expect(tooMany.errorCode == "payload_too_large")
        let atLimit = try http.post("/v1/check/batch", json: "{\"checks\":[\(Array(repeating: item, count: 1000).joined(separator: ","))]}")
        #expect(atLimit.status == 200)
        #expect((atLimit.json["results"] as? [Any])?.count == 1000)
    }

    @Test func permissionsListsActionsPerResourceType() throws {
        defer { live.stop() }
        let r = try http.get("/v1/permissions?subject=user:u1&org=acme")
        #expect(r.status == 200)
        let types = try #require(r.json["resource_types"] as? [[String: Any]])
        let byName = Dictionary(uniqueKeysWithValues: types.map { ($0["type"] as! String, $0) })
        #expect(byName["sandbox"]?["allowed"] as? [String] == ["read", "create", "delete"])
        #expect(byName["organization"]?["allowed"] as? [String] == ["read", "update"])
        let member = try #require(byName["member"])
        #expect(member["allowed"] as? [String] == [])
        let conditional = try #require(member["conditional"] as? [[String: Any]])
        #expect(conditional.first?["action"] as? String == "remove")
        #expect(conditional.first?["conditions"] as? [String] == ["not_last_owner"])

        let viewer = try http.get("/v1/permissions?subject=user:u3&org=acme")
        let viewerTypes = try #require(viewer.json["resource_types"] as? [[String: Any]])
        #expect(viewerTypes.first { $0["type"] as? String == "sandbox" }?["allowed"] as? [String] == ["read"])
        #expect(viewerTypes.allSatisfy { ($0["conditional"] as? [Any])?.isEmpty == true })

        #expect(try http.get("/v1/permissions?subject=user:u1").errorCode == "invalid_parameter")
        #expect(try http.get("/v1/permissions?subject=u1&org=acme").errorCode == "invalid_subject")
    }

    @Test func subjectsListsTheUsersWhoMay() throws {
        defer { live.stop() }
        let r = try http.get("/v1/subjects?org=acme&action=delete&resource=sandbox:sb1")
        #expect(r.status == 200)
        #expect(r.json["subjects"] as? [String] == ["user:u1", "user:u2"])
        let read = try http.get("/v1/subjects?org=acme&action=read&resource=sandbox:sb1")
        #expect(read.json["subjects"] as? [String] == ["user:u1", "user:u2", "user:u3"])
        #expect(try http.get("/v1/subjects?org=acme&action=fly&resource=sandbox:sb1").errorCode == "unknown_action")
        #expect(try http.get("/v1/subjects?org=acme&resource=sandbox:sb1").errorCode == "invalid_parameter")
    }

    @Test func unknownRoutesAndWrongMethods() throws {
        defer { live.stop() }
        let missing = try http.get("/v2/check")
        #expect(missing.status == 404)
        #expect(missing.errorCode == "not_found")
        let wrong = try http.request("DELETE", "/v1/check")
        #expect(wrong.status == 405)
        #expect(wrong.errorCode == "method_not_allowed")
        #expect(wrong.headers["allow"] == "GET, POST")
        let getBatch = try http.get("/v1/check/batch")
        #expect(getBatch.status == 405)
        #expect(getBatch.headers["allow"] == "POST")
        let postHealth = try http.post("/healthz", json: "{}")
        #expect(postHealth.headers["allow"] == "GET")
    }

    @Test func longAndShortAnswersInTurnOnOneConnection() throws {
        defer { live.stop() }
        // The check answer is written into a buffer each request thread reuses: a short answer
        // after a long one must not carry any of the long one's bytes. The long subject (12 KiB)
        // also fits libmicrohttpd's per-connection memory.
        let socket = try RawSocket(port: live.port)
        let long = "user:" + String(repeating: "x", count: 12 * 1024)
        for subject in [long, "user:u1", long, "user:u3"] {
            try socket.send(HTTPClient.encode("GET", "/v1/check?subject=\(subject)&action=read&resource=sandbox:sb1&org=acme",
                                              body: nil, headers: [:], close: false))
            let r = try socket.readResponse()
            #expect(r.status == 200)
            let message = try #require(r.json["message"] as? String)
            #expect(message.contains("`\(subject)`"))
            #expect(r.json["allowed"] as? Bool == (subject != long))
        }
    }

    /// Past libmicrohttpd's 16 KiB per connection, a request line gets 414 and headers get
    /// 431, from libmicrohttpd itself (docs/openapi.yaml lists both on every route); the
    /// server goes on answering.
    @Test func overlongRequestLinesAndHeadersAreRefusedByLibmicrohttpd() throws {
        defer { live.stop() }
        let subject = "user:" + String(repeating: "x", count: 20 * 1024)
        let line = try http.get("/v1/check?subject=\(subject)&action=read&resource=sandbox:sb1&org=acme")
        #expect(line.status == 414)
        let headers = try http.request("GET", "/v1/check?subject=user:u1&action=read&resource=sandbox:sb1&org=acme",
                                       headers: ["X-Padding": String(repeating: "p", count: 20 * 1024)])
        #expect(headers.status == 431)
        let after = try check("user:u1", "read", "sandbox:sb1")
        #expect(after.status == 200)
    }

    @Test func healthReadinessAndMetrics() throws {
        defer { live.stop() }
        #expect(try http.get("/healthz").status == 200)
        let ready = try http.get("/readyz")
        #expect(ready.status == 200)
        #expect(ready.json["revision"] as? Int == 1)
        _ = try check("user:u3", "delete", "sandbox:sb1")
        _ = try http.get("/nope")
        let m = try http.get("/metrics")
        #expect(m.status == 200)
        #expect(m.headers["content-type"]?.hasPrefix("text/plain") == true)
        let text = m.text
        #expect(text.contains(#"authz_http_requests_total{route="/v1/check",status="200"} 1"#))
        #expect(text.contains(#"authz_http_requests_total{route="unmatched",status="404"} 1"#))
        #expect(text.contains(#"authz_decisions_total{outcome="deny",reason="missing_permission"} 1"#))
        #expect(text.contains("authz_http_request_duration_seconds_bucket{route=\"/v1/check\""))
        #expect(text.contains("authz_revision 1"))
        #expect(text.contains(#"authz_directory_entries{kind="members"} 4"#))
        #expect(text.contains("authz_policy_reloads_total"))
    }

    @Test func oversizedBodiesAre413() throws {
        defer { live.stop() }
        let big = "{\"checks\":[\"" + String(repeating: "x", count: 2 << 20) + "\"]}"
        let declared = try http.post("/v1/check/batch", json: big)
        #expect(declared.status == 413)
        #expect(declared.errorCode == "payload_too_large")

        // Chunked, so no Content-Length to refuse up front: read, dropped, then refused.
        let socket = try RawSocket(port: live.port)
        try socket.send("POST /v1/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        let chunk = String(repeating: "y", count: 64 * 1024)
        // 18 x 64 KiB: past the 1 MiB limit, but not so far past that the server hangs up.
        for _ in 0..<18 { try socket.send(String(chunk.utf8.count, radix: 16) + "\r\n" + chunk + "\r\n") }
        try socket.send("0\r\n\r\n")
        let r = try #require(HTTPClient.parse(try socket.readToEnd(), complete: true))
        #expect(r.status == 413)
        #expect(try check("user:u2", "read", "sandbox:sb1").status == 200)
    }

    @Test func keepAliveServesSeveralRequestsOnOneConnection() throws {
        defer { live.stop() }
        let socket = try RawSocket(port: live.port)
        for i in 0..<3 {
            try socket.send(HTTPClient.encode("GET", "/v1/check?subject=user:u\(i + 1)&action=read&resource=sandbox:sb1&org=acme",
                                              body: nil, headers: [:], close: false))
            let r = try socket.readResponse()
            #expect(r.status == 200)
            #expect(r.json["allowed"] as? Bool == true)
        }
    }

    @Test func notReadyUntilDataIsPublished() throws {
        live.stop()
        let pending = try TestServer(ready: false)
        defer { pending.stop() }
        let http = pending.client()
        #expect(try http.get("/healthz").status == 200)
        #expect(try http.get("/readyz").status == 503)
        let early = try http.get("/v1/check?subject=user:u1&action=read&resource=sandbox:sb1&org=acme")
        #expect(early.status == 503)
        #expect(early.errorCode == "not_ready")
        let revision = pending.server.publish(Fixtures.directory())
        #expect(revision == 2)
        #expect(try http.get("/readyz").status == 200)
        let r = try http.get("/v1/check?subject=user:u1&action=read&resource=sandbox:sb1&org=acme")
        #expect(r.json["revision"] as? Int == 2)
    }

    @Test func publishSwapsTheData() throws {
        defer { live.stop() }
        #expect(try check("user:u9", "read", "sandbox:sb1").json["reason"] as? String == "not_member")
        let revision = try live.server.update { d in
            try d.applying([LocatedRecord(line: 1, record: .member(.init(org: "acme", user: "u9", role: "member")))]).directory
        }
        #expect(revision == 2)
        let after = try check("user:u9", "read", "sandbox:sb1")
        #expect(after.json["reason"] as? String == "membership")
        #expect(after.json["revision"] as? Int == 2)
    }
}
