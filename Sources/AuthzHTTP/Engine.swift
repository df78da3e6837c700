import AuthzCore
import AuthzStore
internal import CAuthzMHD
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Prometheus
import Synchronization

/// Everything the request threads share: configuration, tokens, the snapshot store, metrics.
/// The libmicrohttpd callbacks receive it as their context.
final class Engine: Sendable {
    let configuration: ServerConfiguration
    let store: SnapshotStore
    let metrics = ServerMetrics()
    /// Each request thread's reusable answer buffer (the check route's).
    let scratch = ThreadScratch()
    let policyLoader: @Sendable () -> Result<CompiledPolicy, PolicyLoadError>
    let logger: Logger
    /// `Bearer <token>` as bytes, compared in constant time; nil when not configured.
    private let adminAuthorization: [UInt8]?
    private let checkAuthorization: [UInt8]?
    /// Requests between their first callback and their completion (for a graceful stop).
    let inFlight = Atomic<Int>(0)
    /// Set while stopping: answers carry `Connection: close`.
    let draining = Atomic<Bool>(false)
    /// Syncs whose connection is suspended while their work runs: libmicrohttpd aborts the
    /// process if the daemon is stopped with one of them left, so shutdown closes the gate
    /// (later syncs are refused with 503) and then waits for the count to reach zero.
    let syncGate = Mutex<(closed: Bool, suspended: Int)>((false, 0))
    /// The durable writer of membership data, once attached (`/v1/sync`; reloads rebind through it).
    let membership = Mutex<MembershipSync?>(nil)
    /// Bytes reserved up front for sync bodies (see `begin`).
    let bodyBudget: BodyBudget
    /// Bytes held by the other routes' bodies, a hard limit (see `hold`).
    let bodyMemory: BodyBudget

    init(configuration: ServerConfiguration, directory: Directory, ready: Bool, logger: Logger,
         policyLoader: @escaping @Sendable () -> Result<CompiledPolicy, PolicyLoadError>) {
        self.configuration = configuration
        self.store = SnapshotStore(directory: directory, ready: ready)
        self.policyLoader = policyLoader
        self.logger = logger
        self.bodyBudget = BodyBudget(limit: configuration.maxSyncBodySize)
        // At least one largest body, or some bodies could never be read.
        self.bodyMemory = BodyBudget(limit: max(configuration.maxBodyMemory, configuration.maxBodySize))
        func bearer(_ token: String?) -> [UInt8]? {
            guard let token, !token.isEmpty else { return nil }
            return Array(token.utf8)
        }
        adminAuthorization = bearer(configuration.adminToken)
        checkAuthorization = bearer(configuration.checkToken)
        metrics.published(store.current)
    }

    enum Begin {
        case answered(Bool)
        case get(Route)
        case readBody(RequestState)
    }

    // MARK: The callbacks' entry points

    /// The first call for a request: its headers are in, its body (if any) is not.
    func begin(_ c: Connection, url: UnsafePointer<CChar>, method rawMethod: UnsafePointer<CChar>) -> Begin {
        let start = Monotonic.now()
        inFlight.add(1, ordering: .relaxed)
        let route = Route.match(url)
        let method = HTTPMethod(rawMethod)
        func fail(_ e: HTTPError) -> Begin { .answered(send(c, route, start, e)) }

        if route == .unmatched { return fail(.notFound(String(cString: url))) }
        if !route.methods.contains(method) {
            return fail(.methodNotAllowed(method.name, route.label, allow: route.allow))
        }
        if let e = authorize(c, route) { return fail(e) }
        if method == .get { return .get(route) }
        // POST: refuse early what the headers already condemn, before reading a byte of body.
        let length = c.header("Content-Length").flatMap(parseLength)
        if let length, length > bodyLimit(route) {
            return fail(tooLarge(route))
        }
        if route == .sync {
            if let e = requireContentType(c, Self.jsonLines) { return fail(e) }
        } else if route != .policyReload, let e = requireContentType(c, Self.json) {
            return fail(e)
        }
        let state = RequestState(route: route, start: start)
        if route != .policyReload { // its body, if any, is ignored
            switch bodyEncoding(c, route) {
            case .success(let gzip): state.gzip = gzip
            case .failure(let e): return fail(e)
            }
        }
        // A replace is hundreds of megabytes: growing the buffer by doubling would copy it
        // over and over on this pool thread. The declared length is reserved at once, but
        // only within a budget of one largest sync body across all requests (syncs run one
        // at a time anyway): clients announcing large bodies they never send cannot make the
        // server claim more than that.
        if let length, route == .sync, let reservation = bodyBudget.reserve(length) {
            state.body.reserveCapacity(length)
            state.reservation = reservation
        }
        // Check and batch bodies are held within `bodyMemory`, all of them together: a
        // declared length is taken at once (and the buffer sized to it), or refused here.
        if let length, route.holdsBody {
            guard hold(state, length) else { return fail(overloaded()) }
        }
        return .readBody(state)
    }

    /// Makes `state` hold room for `bytes` of body within `bodyMemory` (bodies of at most
    /// `BodyMemory.free` bytes are not counted); false if they do not fit. The buffer is sized
    /// to what is held (what is counted is allocated; before the first hold, the buffer's own
    /// growth may allocate up to twice `BodyMemory.free`, uncounted).
    private func hold(_ state: RequestState, _ bytes: Int) -> Bool {
        guard bytes > state.held, bytes > BodyMemory.free else { return true }
        // Undeclared lengths grow by doubling (few atomic operations), never past the limit.
        let want = max(bytes, min(state.held * 2, bodyLimit(state.route)))
        guard bodyMemory.take(want - state.held) else { return false }
        state.memory = bodyMemory
        state.held = want
        state.body.reserveCapacity(want)
        return true
    }

    /// The second call of a GET: the request is complete; answer it.
    func answerGet(_ route: Route, _ c: Connection) -> Bool {
        let start = Monotonic.now()
        if route == .check {
            // The hot path: the answer is written into this thread's reusable buffer and
            // libmicrohttpd copies it out, so the request allocates nothing of its own.
            return scratch.withBuffer { buffer in
                var w = JSONWriter(taking: &buffer)
                defer { swap(&buffer, &w.bytes) }
                let status = checkQuery(c, into: &w)
                return send(c, route, start, status: status, body: w.bytes, contentType: "application/json")
            }
        }
        let (status, body, type) = get(route, c)
        return send(c, route, start, status: status, body: body, contentType: type)
    }

    /// A chunk of body. Past the limit, bytes are dropped and the answer will be 413; a
    /// client that goes on sending far past it is cut off. A check or batch body that would
    /// pass `bodyMemory` is dropped as well, and answered 503 when it ends (413 if it also
    /// passes the limit). A reload's body is not kept (it is ignored).
    func receive(_ state: RequestState, _ chunk: UnsafeRawBufferPointer) -> Bool {
        let limit = bodyLimit(state.route)
        state.received += chunk.count
        if state.received <= limit && !state.overloaded {
            if state.route == .policyReload { return true }
            if !state.route.holdsBody || hold(state, state.received) {
                state.body.append(contentsOf: chunk)
                return true
            }
            state.overloaded = true
            metrics.bodyRefused()
        }
        state.body = []
        state.letGo()
        return state.received - limit <= max(limit, 1 << 20)
    }

    /// The body is complete.
    func finish(_ state: RequestState, _ c: Connection) -> Bool {
        if state.received > bodyLimit(state.route) { return send(c, state.route, state.start, tooLarge(state.route)) }
        if state.overloaded { return send(c, state.route, state.start, .overloaded(bodyMemory.limit)) }
        if state.route == .sync {
            // Seconds of work for a large batch: run it on another thread with the connection
            // suspended, so this pool thread keeps answering its other connections.
            if let answer = state.answer {
                return send(c, .sync, state.start, status: answer.status, body: answer.body, contentType: "application/json")
            }
            guard !state.working else { return true }
            state.working = true
            let parameters = SyncParameters(mode: c.query("mode").map(string), ifRevision: c.query("if_revision").map(string),
                                            gzip: state.gzip)
            let admitted = syncGate.withLock { g in
                if g.closed { return false }
                g.suspended += 1
                return true
            }
            guard admitted else { return send(c, .sync, state.start, .stopping) }
            let suspended = c.suspend()
            // Below the pool threads: a large sync must not take the cores from checks, but
            // past the limit it must not wait for idle time that may never come either.
            let limit = configuration.syncIdleLimit
            BackgroundWork.start(idleLimit: limit, onRaise: { [logger] found in
                if found.raised == 0 && found.refused == 0 {
                    logger.notice("sync still running after its idle-class limit; no thread was left in the idle class", metadata: [
                        "limit": "\(limit)",
                    ])
                } else if found.refused > 0 && found.raised == 0 {
                    logger.warning("sync still running after its idle-class limit, and the kernel refused to raise its priority (needs CAP_SYS_NICE or an RLIMIT_NICE of at least 10); it goes on in the idle class", metadata: [
                        "limit": "\(limit)", "threads": "\(found.refused)",
                    ])
                } else {
                    logger.notice("sync still running after its idle-class limit: raised to normal priority", metadata: [
                        "limit": "\(limit)", "threads": "\(found.raised)",
                    ])
                }
            }) { [self] in
                // The state is this thread's until it resumes the connection.
                var body = state.body
                state.body = []
                state.answer = sync(&body, parameters)
                suspended.resume()
                // After the resume: a daemon stopped from here on finishes resuming it first.
                syncGate.withLock { $0.suspended -= 1 }
            }
            return true
        }
        let (status, body) = post(state.route, body: state.body, c)
        return send(c, state.route, state.start, status: status, body: body, contentType: "application/json")
    }

    func completed() {
        inFlight.subtract(1, ordering: .relaxed)
    }

    // MARK: Answering

    private func send(_ c: Connection, _ route: Route, _ start: Int64, _ e: HTTPError) -> Bool {
        send(c, route, start, status: e.status, body: e.body, contentType: "application/json", header: e.header)
    }

    private func send(
        _ c: Connection, _ route: Route, _ start: Int64, status: Int, body: [UInt8],
        contentType: StaticString, header: (name: String, value: String)? = nil
    ) -> Bool {
        let ok = c.respond(status: status, body: body, contentType: contentType, header: header,
                           close: draining.load(ordering: .relaxed))
        metrics.request(route, status: status, nanoseconds: Monotonic.now() - start)
        return ok
    }

    private func bodyLimit(_ route: Route) -> Int {
        route == .sync ? configuration.maxSyncBodySize : configuration.maxBodySize
    }

    /// 503 for a check or batch whose body does not fit in `bodyMemory` (counted).
    private func overloaded() -> HTTPError {
        metrics.bodyRefused()
        return .overloaded(bodyMemory.limit)
    }

    private func tooLarge(_ route: Route) -> HTTPError {
        .payloadTooLarge("the request body exceeds \(bodyLimit(route)) bytes")
    }

    // MARK: Request checks

    private func authorize(_ c: Connection, _ route: Route) -> HTTPError? {
        let expected: [UInt8]
        switch route.guardedBy {
        case .none:
            return nil
        case .check:
            guard let token = checkAuthorization else { return nil }
            expected = token
        case .admin:
            guard let token = adminAuthorization else {
                return .unauthorized("admin routes are disabled: the server has no admin token")
            }
            expected = token
        }
        guard let given = c.header("Authorization") else { return .unauthorized("missing bearer token") }
        // `Bearer`, in any case (RFC 9110: schemes are case-insensitive), one or more spaces,
        // then the token, compared in constant time.
        let scheme: StaticString = "bearer"
        guard given.count > 7, (0..<6).allSatisfy({ given[$0] | 0x20 == scheme.utf8Start[$0] }), given[6] == 0x20 else {
            return .unauthorized("invalid bearer token")
        }
        var at = 7
        while at < given.count && given[at] == 0x20 { at += 1 }
        return constantTimeEqual(UnsafeRawBufferPointer(rebasing: given[at...]), expected) ? nil : .unauthorized("invalid bearer token")
    }

    /// The media types the POST routes take: JSON, and JSON Lines for `/v1/sync`.
    private static let json: [StaticString] = ["application/json"]
    private static let jsonLines: [StaticString] = [
        "application/x-ndjson", "application/jsonl", "application/json-lines", "application/jsonlines",
    ]

    /// Whether the request's `Content-Type` is one of `accepted` (ASCII case-insensitive;
    /// parameters after `;` ignored), compared on the header's bytes.
    private func requireContentType(_ c: Connection, _ accepted: [StaticString]) -> HTTPError? {
        guard let type = c.header("Content-Type") else { return .unsupportedMediaType(nil, expected: accepted[0].description) }
        for candidate in accepted {
            let n = candidate.utf8CodeUnitCount
            guard type.count >= n else { continue }
            var matches = true
            for i in 0..<n where type[i] | 0x20 != candidate.utf8Start[i] | 0x20 {
                matches = false
                break
            }
            if matches && (type.count == n || type[n] == 0x3B || type[n] == 0x20) { return nil }
        }
        return .unsupportedMediaType(String(decoding: type, as: UTF8.self), expected: accepted[0].description)
    }

    /// `Content-Encoding`, a list of codings (RFC 9110): empty elements and `identity` mean
    /// nothing; what remains may be nothing (the body as it is, on every POST route) or, on
    /// `/v1/sync`, one `gzip` (or its old name `x-gzip`): true. Anything else is 415, with
    /// `Accept-Encoding` saying what the route takes.
    private func bodyEncoding(_ c: Connection, _ route: Route) -> Result<Bool, HTTPError> {
        guard let raw = c.header("Content-Encoding") else { return .success(false) }
        let text = String(decoding: raw, as: UTF8.self)
        // Several lines are one list (RFC 9110), but only the first is at hand: refused
        // rather than half read.
        let lines = c.headerLines("Content-Encoding")
        if lines > 1 {
            return .failure(.unsupportedEncoding("`Content-Encoding` on \(lines) header lines", route: route.label, gzip: route == .sync))
        }
        let codings = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            .filter { !$0.isEmpty && $0 != "identity" }
        if codings.isEmpty { return .success(false) }
        if route == .sync && codings.count == 1 && (codings[0] == "gzip" || codings[0] == "x-gzip") { return .success(true) }
        return .failure(.unsupportedEncoding("content encoding `\(text)`", route: route.label, gzip: route == .sync))
    }

    /// Decimal digits, every byte one; nil for anything else or none. A number past Int.max
    /// is Int.max, and says so.
    func parseDecimal(_ b: UnsafeRawBufferPointer) -> (value: Int, overflow: Bool)? {
        guard !b.isEmpty else { return nil }
        var n = 0
        var overflow = false
        for c in b {
            guard c >= 0x30, c <= 0x39 else { return nil }
            let (times10, o1) = n.multipliedReportingOverflow(by: 10)
            let (next, o2) = times10.addingReportingOverflow(Int(c - 0x30))
            if o1 || o2 { overflow = true }
            n = overflow ? Int.max : next
        }
        return (n, overflow)
    }

    /// A `Content-Length`; a number past Int.max is Int.max (over any limit).
    func parseLength(_ b: UnsafeRawBufferPointer) -> Int? { parseDecimal(b)?.value }

    // MARK: Writers

    /// The wall clock as the core's `Timestamp` (the core itself never reads a clock).
    /// CLOCK_REALTIME_COARSE: the time of the last scheduler tick (a few milliseconds at
    /// most behind), read from memory the kernel maps into the process, which is plenty for
    /// expiry times given to the second and costs next to nothing per request.
    static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &ts)
        return Timestamp(seconds: Int64(ts.tv_sec), nanoseconds: Int32(ts.tv_nsec))
    }

    /// The members of a decision object, without braces: `"allowed":..,"reason":..,"message":..`.
    /// The message is written straight into the answer, piece by piece, from the request's
    /// bytes: no String is built.
    func writeDecision(
        _ d: Decision, subject: UnsafeRawBufferPointer, resource: UnsafeRawBufferPointer,
        org: UnsafeRawBufferPointer, _ directory: Directory, into w: inout JSONWriter
    ) {
        metrics.decision(d.reason)
        w.raw("\"allowed\":")
        w.bool(d.allowed)
        w.raw(",\"reason\":\"")
        w.raw(d.reason.staticCode)
        w.raw("\",\"message\":\"")
        directory.explain(d, subject: subject, resource: resource, org: org) { w.stringContent($0) }
        w.byte(0x22)
    }

    /// The same for a request given as Strings (POST bodies).
    func writeDecision(_ d: Decision, _ request: CheckRequest, _ directory: Directory, into w: inout JSONWriter) {
        var subject = request.subject, resource = request.resource, org = request.org
        subject.withUTF8 { s in
            resource.withUTF8 { r in
                org.withUTF8 { o in
                    writeDecision(d, subject: UnsafeRawBufferPointer(s), resource: UnsafeRawBufferPointer(r),
                                  org: UnsafeRawBufferPointer(o), directory, into: &w)
                }
            }
        }
    }

    // MARK: Snapshot changes

    func publish(_ directory: Directory, revision: UInt64?, ready: Bool = true) -> UInt64 {
        // Readiness only ever turns on: a publication made before the server is ready (while
        // the store loads) must not turn it off again once it is.
        let snapshot = store.update { current in (directory, revision, ready || current.ready) }!
        metrics.published(snapshot)
        return snapshot.revision
    }

    func update<E: Error>(_ body: (Directory) throws(E) -> Directory?) throws(E) -> UInt64? {
        let snapshot = try store.update { current throws(E) in
            try body(current.directory).map { ($0, nil, true) }
        }
        if let snapshot { metrics.published(snapshot) }
        return snapshot?.revision
    }

    func setReady() {
        store.update { current in current.ready ? nil : (current.directory, current.revision, true) }
    }

    /// Loads and compiles the policy, rebinds the data to it and swaps both in at once. On
    /// any error the old policy keeps serving and the errors are returned.
    func reloadPolicy() -> Result<ReloadSummary, PolicyLoadError> {
        let result: Result<ReloadSummary, PolicyLoadError>
        let writer = membership.withLock { $0 }
        switch policyLoader() {
        case .failure(let e):
            result = .failure(e)
        case .success(let policy) where writer != nil:
            // The durable writer holds the data: it rebinds and publishes at the same revision,
            // so a later sync applies to data bound to the new policy.
            switch writer!.rebind(to: policy) {
            case .success:
                result = .success(ReloadSummary(policy: policy.name, revision: store.current.revision))
            case .failure(let errors):
                result = .failure(PolicyLoadError(errors: errors.errors.map {
                    "the membership data does not fit the new policy: \($0.message)"
                }))
            }
        case .success(let policy):
            do {
                let snapshot = try store.update { current throws(DataErrors) in
                    (try current.directory.rebound(to: policy), nil, current.ready)
                }!
                metrics.published(snapshot)
                result = .success(ReloadSummary(policy: policy.name, revision: snapshot.revision))
            } catch {
                result = .failure(PolicyLoadError(errors: error.errors.map {
                    "the membership data does not fit the new policy: \($0.message)"
                }))
            }
        }
        switch result {
        case .success(let s):
            metrics.reloads.increment()
            logger.info("policy reloaded", metadata: ["policy": "\(s.policy)", "revision": "\(s.revision)"])
        case .failure(let e):
            metrics.reloadFailures.increment()
            logger.error("policy reload failed; the previous policy keeps serving",
                         metadata: ["errors": "\(e.errors.count)", "first": "\(e.errors.first ?? "")"])
        }
        return result
    }
}

/// Compares a presented credential with the expected one in time that depends only on the
/// expected one's length, so the comparison leaks nothing of where they differ.
func constantTimeEqual(_ given: UnsafeRawBufferPointer, _ expected: [UInt8]) -> Bool {
    var diff = UInt64(truncatingIfNeeded: given.count ^ expected.count)
    let n = given.count
    for i in 0..<expected.count {
        let g: UInt8 = n > 0 ? given[i % n] : 0
        diff |= UInt64(g ^ expected[i])
    }
    return diff == 0
}

/// A shared allowance of bytes reserved ahead for request bodies.
final class BodyBudget: Sendable {
    private let reserved = Atomic<Int>(0)
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// A reservation of `bytes`, returned when it is freed; nil if it would exceed the budget.
    func reserve(_ bytes: Int) -> Reservation? {
        guard take(bytes) else { return nil }
        return Reservation(budget: self, bytes: bytes)
    }

    /// Takes `bytes` from the budget if they fit; the caller gives them back (`give`). A
    /// compare-and-exchange, so that a take that does not fit never shows in the count, where
    /// it could make one that fits fail.
    func take(_ bytes: Int) -> Bool {
        var current = reserved.load(ordering: .relaxed)
        while bytes <= limit - current {
            let (exchanged, original) = reserved.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    func give(_ bytes: Int) {
        reserved.subtract(bytes, ordering: .relaxed)
    }

    final class Reservation: Sendable {
        let budget: BodyBudget
        let bytes: Int
        init(budget: BodyBudget, bytes: Int) {
            self.budget = budget
            self.bytes = bytes
        }
        deinit { budget.give(bytes) }
    }

    /// Bytes currently reserved (for tests).
    var current: Int { reserved.load(ordering: .relaxed) }
}
