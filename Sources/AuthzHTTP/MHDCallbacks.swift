internal import CAuthzMHD
internal import CMicroHTTPD

/// The state of one request that has a body: where it goes and the bytes so far. Created on
/// the first call for a POST, passed to libmicrohttpd with `passRetained` as the
/// connection's `con_cls`, released in `requestCompleted`, which libmicrohttpd calls for
/// every request it handed to `access`, finished or aborted.
final class RequestState: @unchecked Sendable {
    let route: Route
    /// When its headers were in (`Monotonic.now()`).
    let start: Int64
    var body: [UInt8] = []
    /// For work run off the pool thread (a sync): set while it runs, then its answer. Written
    /// by the worker before it resumes the connection, read on the pool thread after.
    var working = false
    var answer: (status: Int, body: [UInt8])?
    /// Bytes of body received so far; past the route's limit they are dropped (the answer
    /// will be 413).
    var received = 0
    /// The share of the body budget this request's buffer was reserved from, returned with it.
    var reservation: BodyBudget.Reservation?
    /// `Content-Encoding: gzip` (a sync): `body` is compressed.
    var gzip = false
    /// Bytes this request holds of the engine's `bodyMemory` (a check or batch), and that budget,
    /// set only when it holds some: a small body touches no shared count.
    var held = 0
    var memory: BodyBudget?
    /// Its body would have passed `bodyMemory`: dropped, and the answer will be 503.
    var overloaded = false
    init(route: Route, start: Int64) {
        self.route = route
        self.start = start
    }

    /// Gives back what it holds of `bodyMemory` (its body is gone).
    func letGo() {
        if held > 0 { memory?.give(held) }
        held = 0
    }

    deinit { letGo() }
}

/// What `Engine.hold` does not count.
enum BodyMemory {
    /// A body of at most this many bytes is held outside the budget: with the connection
    /// limit (1,024 by default) they come to 16 MiB at most.
    static var free: Int { 16 << 10 }
}

/// The C callbacks libmicrohttpd calls from its threads. Non-capturing closures held in
/// `static let`s of a type (not in main.swift, whose top-level code is main-actor isolated),
/// with the server's `Engine` as their context (`Unmanaged.passUnretained`, kept alive by the
/// server until the daemon has stopped).
enum MHDCallbacks {
    /// Called for the headers (`*con_cls == NULL`), then once per chunk of body, then once
    /// more with no data when the body is complete.
    ///
    /// libmicrohttpd 0.9.75 closes the connection after any response queued on the first
    /// call (it has not seen the end of the request yet), so only errors that should close
    /// it anyway are answered there. A GET gets no allocated state: its `con_cls` is a tagged
    /// non-pointer (`GetTag`) naming the route, and it is answered on the second call.
    static let access: MHD_AccessHandlerCallback = { cls, connection, url, method, _, uploadData, uploadDataSize, conCls in
        guard let cls, let connection, let url, let method, let uploadDataSize, let conCls else { return .NO }
        // Borrowed, not retained: the server keeps the engine alive until the daemon has
        // stopped, and a retain here would bounce the engine's reference count between the
        // pool threads' cores on every call (perf: the most sampled retain of a check).
        return Unmanaged<Engine>.fromOpaque(cls)._withUnsafeGuaranteedRef { engine in
            let request = Connection(raw: connection)
            guard let raw = conCls.pointee else {
                switch engine.begin(request, url: url, method: method) {
                case .answered(let ok):
                    return ok ? .YES : .NO
                case .get(let route):
                    conCls.pointee = GetTag.make(route)
                    return .YES
                case .readBody(let state):
                    conCls.pointee = Unmanaged.passRetained(state).toOpaque()
                    return .YES
                }
            }
            let size = uploadDataSize.pointee
            if let route = GetTag.route(raw) {
                // A GET with a body: the body is ignored.
                if size > 0 {
                    uploadDataSize.pointee = 0
                    return .YES
                }
                return engine.answerGet(route, request) ? .YES : .NO
            }
            let state = Unmanaged<RequestState>.fromOpaque(raw).takeUnretainedValue()
            if size > 0 {
                let chunk = UnsafeRawBufferPointer(start: uploadData, count: size)
                uploadDataSize.pointee = 0
                return engine.receive(state, chunk) ? .YES : .NO
            }
            return engine.finish(state, request) ? .YES : .NO
        }
    }

    /// Called once per request that reached `access`, whether it was answered or aborted
    /// (client gone, timeout, daemon stopping): releases the request's state.
    static let requestCompleted: MHD_RequestCompletedCallback = { cls, _, conCls, _ in
        if let conCls, let raw = conCls.pointee {
            if GetTag.route(raw) == nil { Unmanaged<RequestState>.fromOpaque(raw).release() }
            conCls.pointee = nil
        }
        if let cls { Unmanaged<Engine>.fromOpaque(cls)._withUnsafeGuaranteedRef { $0.completed() } }
    }
}

/// A GET request's `con_cls`: the route's number plus one, as a pointer value that is never
/// dereferenced (no object is that close to address zero).
enum GetTag {
    static func make(_ route: Route) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: route.rawValue + 1)!
    }
    static func route(_ pointer: UnsafeMutableRawPointer) -> Route? {
        let bits = Int(bitPattern: pointer)
        return bits <= Route.allCases.count ? Route(rawValue: bits - 1) : nil
    }
}

/// A libmicrohttpd connection during one callback: read its query arguments and headers as
/// bytes, queue one response. The pointers it hands out live until the callback returns.
struct Connection {
    let raw: OpaquePointer

    @inline(__always)
    private func lookup(_ kind: MHD_ValueKind, _ name: StaticString) -> UnsafeRawBufferPointer? {
        var size = 0
        let value = name.withUTF8Buffer { key in
            key.withMemoryRebound(to: CChar.self) { k in
                authz_mhd_lookup(raw, kind, k.baseAddress, k.count, &size)
            }
        }
        guard let value else { return nil }
        return UnsafeRawBufferPointer(start: value, count: size)
    }

    /// A query argument, URL-decoded by libmicrohttpd; nil when absent.
    @inline(__always)
    func query(_ name: StaticString) -> UnsafeRawBufferPointer? { lookup(.GET_ARGUMENT_KIND, name) }

    /// How many lines of the request carry header `name` (case-insensitive).
    func headerLines(_ name: StaticString) -> Int {
        name.withUTF8Buffer { key in
            key.withMemoryRebound(to: CChar.self) { k in Int(authz_mhd_count(raw, .HEADER_KIND, k.baseAddress)) }
        }
    }

    /// A request header (names compare case-insensitively); nil when absent.
    @inline(__always)
    func header(_ name: StaticString) -> UnsafeRawBufferPointer? { lookup(.HEADER_KIND, name) }

    /// Suspends the connection (no more callbacks, no timeout) until `SuspendedConnection.resume`.
    func suspend() -> SuspendedConnection {
        MHD_suspend_connection(raw)
        return SuspendedConnection(raw: raw)
    }

    /// Queues the response (libmicrohttpd copies `body`).
    func respond(status: Int, body: [UInt8], contentType: StaticString, header: (name: String, value: String)?, close: Bool) -> Bool {
        let result: MHD_Result = body.withUnsafeBytes { b in
            contentType.withUTF8Buffer { ct in
                ct.withMemoryRebound(to: CChar.self) { ctype in
                    // StaticString literals are NUL-terminated.
                    if let header {
                        return header.name.withCString { n in
                            header.value.withCString { v in
                                authz_mhd_respond(raw, UInt32(status), b.baseAddress, b.count, ctype.baseAddress, n, v, close ? 1 : 0)
                            }
                        }
                    }
                    return authz_mhd_respond(raw, UInt32(status), b.baseAddress, b.count, ctype.baseAddress, nil, nil, close ? 1 : 0)
                }
            }
        }
        return result == .YES
    }
}

/// A suspended connection, to be resumed from any thread; libmicrohttpd then calls the access
/// handler again for it.
struct SuspendedConnection: @unchecked Sendable {
    let raw: OpaquePointer
    func resume() { MHD_resume_connection(raw) }
}
