import AuthzCore
import AuthzData
import Foundation

/// The route handlers. Each reads one snapshot for its whole answer.
extension Engine {
    typealias Answer = (status: Int, body: [UInt8])

    // MARK: GET

    func get(_ route: Route, _ c: Connection) -> (Int, [UInt8], StaticString) {
        switch route {
        case .check:
            var w = JSONWriter(capacity: 256)
            let status = checkQuery(c, into: &w)
            return (status, w.bytes, "application/json")
        case .permissions: let a = permissions(c); return (a.status, a.body, "application/json")
        case .subjects: let a = subjects(c); return (a.status, a.body, "application/json")
        case .healthz: return (200, Array("{\"status\":\"ok\"}\n".utf8), "application/json")
        case .readyz: let a = readyz(); return (a.status, a.body, "application/json")
        case .metrics: return (200, metrics.exposition(bodyMemoryHeld: bodyMemory.current), "text/plain; version=0.0.4; charset=utf-8")
        case .checkBatch, .sync, .policyReload, .unmatched:
            let e = HTTPError.notFound(route.label)
            return (e.status, e.body, "application/json")
        }
    }

    // MARK: POST

    func post(_ route: Route, body: [UInt8], _ c: Connection) -> Answer {
        switch route {
        case .check: return checkBody(body)
        case .checkBatch: return batch(body)
        case .policyReload: return reload()
        default:
            let e = HTTPError.notFound(route.label)
            return (e.status, e.body)
        }
    }

    // MARK: /v1/check

    /// The hot path: the four query arguments go as bytes, straight from libmicrohttpd's
    /// decoded query, into the allocation-free `check`; the answer, message included, is
    /// written by hand into `w` (a reused buffer) and its status returned.
    func checkQuery(_ c: Connection, into w: inout JSONWriter) -> Int {
        store.withCurrent { snapshot -> Int in
            func fail(_ a: Answer) -> Int {
                w.bytes.append(contentsOf: a.body)
                return a.status
            }
            guard snapshot.ready else { return fail((503, HTTPError.notReady.body)) }
            guard let subject = c.query("subject") else { return fail(missing("subject")) }
            guard let action = c.query("action") else { return fail(missing("action")) }
            guard let resource = c.query("resource") else { return fail(missing("resource")) }
            guard let org = c.query("org") else { return fail(missing("org")) }
            // Stored ids are UTF-8 (they came as JSON), and the answer quotes these bytes.
            // (One by one: an array of them would be an allocation on the hot path.)
            guard isUTF8(subject) else { return fail(notUTF8("subject")) }
            guard isUTF8(action) else { return fail(notUTF8("action")) }
            guard isUTF8(resource) else { return fail(notUTF8("resource")) }
            guard isUTF8(org) else { return fail(notUTF8("org")) }
            if let raw = c.query("min_revision") {
                guard let wanted = parseRevision(raw) else {
                    return fail((400, HTTPError.invalidParameter("min_revision `\(string(raw))` must be a non-negative integer").body))
                }
                if snapshot.revision < wanted { return fail(stale(snapshot, wanted)) }
            }
            let directory = snapshot.directory
            let decision: Decision
            do throws(CheckError) {
                decision = try directory.check(subject: subject, action: action, resource: resource, org: org, now: Engine.now())
            } catch {
                return fail((400, HTTPError(error).body))
            }
            w.byte(0x7B)
            writeDecision(decision, subject: subject, resource: resource, org: org, directory, into: &w)
            w.raw(",\"revision\":")
            w.int(snapshot.revision)
            w.raw("}\n")
            return 200
        }
    }

    func checkBody(_ body: [UInt8]) -> Answer {
        let request: CheckRequest
        let wanted: UInt64?
        do {
            let json = try parseJSON(body)
            request = try checkRequest(json, at: nil)
            wanted = try minRevision(json)
        } catch {
            return (error.status, error.body)
        }
        return store.withCurrent { snapshot -> Answer in
            guard snapshot.ready else { return (503, HTTPError.notReady.body) }
            if let wanted, snapshot.revision < wanted { return stale(snapshot, wanted) }
            do throws(CheckError) {
                let d = try snapshot.directory.check(request, now: Engine.now())
                var w = JSONWriter(capacity: 256)
                w.byte(0x7B)
                writeDecision(d, request, snapshot.directory, into: &w)
                w.raw(",\"revision\":")
                w.int(snapshot.revision)
                w.raw("}\n")
                return (200, w.bytes)
            } catch {
                return (400, HTTPError(error).body)
            }
        }
    }

    // MARK: /v1/check/batch

    func batch(_ body: [UInt8]) -> Answer {
        let items: [Any]
        let wanted: UInt64?
        do {
            guard let object = try parseJSON(body) as? [String: Any] else {
                throw HTTPError.invalidParameter("the body must be an object with a `checks` array")
            }
            guard let checks = object["checks"] as? [Any] else {
                throw HTTPError.invalidParameter("the body must have a `checks` array")
            }
            guard checks.count <= configuration.maxBatch else {
                throw HTTPError.payloadTooLarge("a batch holds at most \(configuration.maxBatch) checks; this one has \(checks.count)")
            }
            items = checks
            wanted = try minRevision(object)
        } catch let e as HTTPError {
            return (e.status, e.body)
        } catch {
            return (500, HTTPError(status: 500, code: "internal", message: "unexpected error").body)
        }
        return store.withCurrent { snapshot -> Answer in
            guard snapshot.ready else { return (503, HTTPError.notReady.body) }
            if let wanted, snapshot.revision < wanted { return stale(snapshot, wanted) }
            let now = Engine.now()
            var w = JSONWriter(capacity: 64 + items.count * 160)
            w.raw("{\"results\":[")
            for (i, item) in items.enumerated() {
                if i > 0 { w.byte(0x2C) }
                do {
                    let request = try checkRequest(item, at: i)
                    let d = try snapshot.directory.check(request, now: now)
                    w.byte(0x7B)
                    writeDecision(d, request, snapshot.directory, into: &w)
                    w.byte(0x7D)
                } catch let e as HTTPError {
                    w.raw("{\"error\":")
                    e.writeObject(into: &w)
                    w.byte(0x7D)
                } catch let e as CheckError {
                    w.raw("{\"error\":")
                    HTTPError(e).writeObject(into: &w)
                    w.byte(0x7D)
                } catch {
                    w.raw("{\"error\":{\"code\":\"internal\",\"message\":\"unexpected error\"}}")
                }
            }
            w.raw("],\"revision\":")
            w.int(snapshot.revision)
            w.raw("}\n")
            return (200, w.bytes)
        }
    }

    // MARK: /v1/permissions and /v1/subjects

    func permissions(_ c: Connection) -> Answer {
        store.withCurrent { snapshot -> Answer in
            guard snapshot.ready else { return (503, HTTPError.notReady.body) }
            guard let rawSubject = c.query("subject") else { return missing("subject") }
            guard let rawOrg = c.query("org") else { return missing("org") }
            guard isUTF8(rawSubject) else { return notUTF8("subject") }
            guard isUTF8(rawOrg) else { return notUTF8("org") }
            let (subject, org) = (string(rawSubject), string(rawOrg))
            let listing: PermissionListing
            do throws(CheckError) {
                listing = try snapshot.directory.permissions(subject: subject, org: org, now: Engine.now())
            } catch {
                return (400, HTTPError(error).body)
            }
            var w = JSONWriter(capacity: 512)
            w.raw("{\"subject\":")
            w.string(subject)
            w.raw(",\"org\":")
            w.string(org)
            w.raw(",\"resource_types\":[")
            for (i, t) in listing.resourceTypes.enumerated() {
                if i > 0 { w.byte(0x2C) }
                w.raw("{\"type\":")
                w.string(t.resourceType)
                w.raw(",\"allowed\":")
                w.stringArray(t.allowed)
                w.raw(",\"conditional\":[")
                for (j, a) in t.conditional.enumerated() {
                    if j > 0 { w.byte(0x2C) }
                    w.raw("{\"action\":")
                    w.string(a.action)
                    w.raw(",\"conditions\":")
                    w.stringArray(a.conditions.map(\.name))
                    w.byte(0x7D)
                }
                w.raw("]}")
            }
            w.raw("],\"revision\":")
            w.int(snapshot.revision)
            w.raw("}\n")
            return (200, w.bytes)
        }
    }

    func subjects(_ c: Connection) -> Answer {
        store.withCurrent { snapshot -> Answer in
            guard snapshot.ready else { return (503, HTTPError.notReady.body) }
            guard let rawOrg = c.query("org") else { return missing("org") }
            guard let rawAction = c.query("action") else { return missing("action") }
            guard let rawResource = c.query("resource") else { return missing("resource") }
            guard isUTF8(rawOrg) else { return notUTF8("org") }
            guard isUTF8(rawAction) else { return notUTF8("action") }
            guard isUTF8(rawResource) else { return notUTF8("resource") }
            let (org, action, resource) = (string(rawOrg), string(rawAction), string(rawResource))
            let subjects: [String]
            do throws(CheckError) {
                subjects = try snapshot.directory.subjects(org: org, action: action, resource: resource, now: Engine.now())
            } catch {
                return (400, HTTPError(error).body)
            }
            var w = JSONWriter(capacity: 128 + subjects.count * 24)
            w.raw("{\"org\":")
            w.string(org)
            w.raw(",\"action\":")
            w.string(action)
            w.raw(",\"resource\":")
            w.string(resource)
            w.raw(",\"subjects\":")
            w.stringArray(subjects)
            w.raw(",\"revision\":")
            w.int(snapshot.revision)
            w.raw("}\n")
            return (200, w.bytes)
        }
    }

    // MARK: Admin and health

    func reload() -> Answer {
        switch reloadPolicy() {
        case .success(let s):
            var w = JSONWriter()
            w.raw("{\"reloaded\":true,\"policy\":")
            w.string(s.policy)
            w.raw(",\"revision\":")
            w.int(s.revision)
            w.raw("}\n")
            return (200, w.bytes)
        case .failure(let e):
            let n = e.errors.count
            let error = HTTPError(
                status: 422, code: "policy_invalid",
                message: "the policy was not reloaded (\(n) error\(n == 1 ? "" : "s")); the previous policy keeps serving",
                errors: e.errors)
            return (422, error.body)
        }
    }

    func readyz() -> Answer {
        let snapshot = store.current
        guard snapshot.ready else { return (503, HTTPError.notReady.body) }
        var w = JSONWriter()
        w.raw("{\"status\":\"ready\",\"revision\":")
        w.int(snapshot.revision)
        w.raw("}\n")
        return (200, w.bytes)
    }

    // MARK: Parsing

    /// 409: the caller has seen a newer revision than this server has reached.
    func stale(_ snapshot: Snapshot, _ wanted: UInt64) -> Answer {
        (409, HTTPError.staleRevision(current: snapshot.revision, wanted: wanted).body)
    }

    /// The optional `min_revision` of a JSON body.
    private func minRevision(_ json: Any) throws(HTTPError) -> UInt64? {
        guard let object = json as? [String: Any], let v = object["min_revision"] else { return nil }
        // JSON's true and false are NSNumbers too, of type "c" (char); `is Bool` holds for any
        // NSNumber 0 or 1 on Linux, so it would refuse `"min_revision": 1`. Integers are read
        // as integers (a Double loses digits past 2^53); a number with a fraction or an
        // exponent must still be a whole one.
        guard let n = v as? NSNumber else { throw .invalidParameter("field `min_revision` must be a non-negative integer") }
        let i: Int64?
        switch String(cString: n.objCType) {
        case "c": i = nil
        case "q", "i", "s", "l": i = n.int64Value
        case "Q", "I", "S", "L": i = n.uint64Value <= UInt64(Int64.max) ? Int64(n.uint64Value) : nil
        default: i = Int64(exactly: n.doubleValue)
        }
        guard let i, i >= 0 else {
            throw .invalidParameter("field `min_revision` must be a non-negative integer")
        }
        return UInt64(i)
    }

    private func missing(_ name: StaticString) -> Answer {
        (400, HTTPError.invalidParameter("missing query parameter `\(name)`").body)
    }

    private func notUTF8(_ name: StaticString) -> Answer {
        (400, HTTPError.invalidParameter("query parameter `\(name)` is not valid UTF-8").body)
    }

    /// Whether `b` is valid UTF-8: ASCII (the usual case) 8 bytes at a time, the rest by the
    /// standard library.
    func isUTF8(_ b: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        while i + 8 <= b.count, b.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 { i += 8 }
        while i < b.count, b[i] < 0x80 { i += 1 }
        return i == b.count || String(validating: b[i...], as: UTF8.self) != nil
    }

    /// A `min_revision` query parameter: decimal digits, at most Int64.max.
    func parseRevision(_ b: UnsafeRawBufferPointer) -> UInt64? {
        guard let n = parseDecimal(b), !n.overflow else { return nil }
        return UInt64(Int64(n.value))
    }

    func string(_ b: UnsafeRawBufferPointer) -> String { String(decoding: b, as: UTF8.self) }

    private func parseJSON(_ body: [UInt8]) throws(HTTPError) -> Any {
        guard !body.isEmpty else { throw .invalidJSON("the request body is empty; send a JSON object") }
        // UTF-8 only: Foundation would also read UTF-16 and UTF-32 (told by their NUL bytes),
        // which the checks below, reading bytes, would not see through.
        let utf8 = body.withUnsafeBytes { b in memchr(b.baseAddress!, 0, b.count) == nil && isUTF8(b) }
        guard utf8 else { throw .invalidJSON("the request body is not UTF-8 text (UTF-16 and UTF-32 are not read, nor NUL bytes)") }
        // Read as sent: Foundation drops a U+FEFF written as bytes inside a string (the
        // escaped form is kept), and keeps the last of repeated keys.
        var data = Data(body)
        if let escaped = JSONText.escapingByteOrderMarks(data) { data = escaped }
        let value: Any
        do {
            value = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw .invalidJSON("the request body is not valid JSON")
        }
        if let key = JSONText.repeatedKey(in: data) {
            throw .invalidJSON("the key `\(Identifier.quotable(key))` appears twice in one object")
        }
        return value
    }

    /// The four strings of a check from a JSON object; `index` names a batch item in messages.
    private func checkRequest(_ value: Any, at index: Int?) throws(HTTPError) -> CheckRequest {
        let place = index.map { "check \($0): " } ?? ""
        guard let object = value as? [String: Any] else {
            throw .invalidParameter("\(place)a check must be an object with `subject`, `action`, `resource` and `org`")
        }
        func field(_ name: String) throws(HTTPError) -> String {
            guard let v = object[name] else { throw .invalidParameter("\(place)missing field `\(name)`") }
            guard let s = v as? String else { throw .invalidParameter("\(place)field `\(name)` must be a string") }
            return s
        }
        return CheckRequest(subject: try field("subject"), action: try field("action"),
                            resource: try field("resource"), org: try field("org"))
    }
}
