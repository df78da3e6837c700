import AuthzCore
import AuthzStore
internal import CAuthzMHD
internal import CMicroHTTPD
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The decision endpoint: API v1 over libmicrohttpd.
///
/// It answers from an immutable snapshot (a `Directory`, which carries its compiled policy).
/// `publish` swaps in new membership data, `reloadPolicy` a new policy (from the injected
/// loader); both are atomic for readers, and every answer comes from one whole snapshot.
public final class AuthzServer: Sendable {
    let engine: Engine
    private let daemon = Mutex<DaemonHandle?>(nil)

    /// The libmicrohttpd daemon pointer, owned by this server.
    private struct DaemonHandle: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    /// - Parameters:
    ///   - directory: the membership data to serve, bound to the current policy.
    ///   - ready: whether the data is loaded (`/readyz`); a later `publish` makes it so.
    ///   - policyLoader: loads and compiles the policy file, for reloads.
    public init(
        configuration: ServerConfiguration, directory: Directory, ready: Bool = true,
        logger: Logger = Logger(label: "authz.http"),
        policyLoader: @escaping @Sendable () -> Result<CompiledPolicy, PolicyLoadError>
    ) {
        engine = Engine(configuration: configuration, directory: directory, ready: ready, logger: logger,
                        policyLoader: policyLoader)
    }

    deinit {
        shutdown(gracePeriod: .zero)
    }

    /// libmicrohttpd's memory per connection: the request line, headers and decoded query, the
    /// response headers, and the read buffer for a body. 0.9.75 zeroes all of it between two
    /// requests of a keep-alive connection, so its size is paid on every request (64 KiB cost
    /// ~1.3 us of memset per request; benchmarks/FINDINGS.md). 16 KiB still takes a request
    /// line and headers of about 15 KiB; a longer one is answered 414 by libmicrohttpd.
    static let connectionMemory = 16 * 1024

    /// Binds and starts the thread pool. Throws if the address cannot be bound.
    public func start() throws(ServerStartError) {
        let c = engine.configuration
        var error = [CChar](repeating: 0, count: 256)
        let started: OpaquePointer? = c.host.withCString { host in
            var config = authz_mhd_config(
                host: host,
                port: UInt16(clamping: c.port),
                threads: UInt32(clamping: max(1, c.threads)),
                connection_limit: UInt32(clamping: max(1, c.connectionLimit)),
                connection_timeout: UInt32(clamping: max(1, c.connectionTimeout)),
                connection_memory_limit: AuthzServer.connectionMemory,
                handler: MHDCallbacks.access,
                handler_cls: Unmanaged.passUnretained(engine).toOpaque(),
                completed: MHDCallbacks.requestCompleted,
                completed_cls: Unmanaged.passUnretained(engine).toOpaque())
            return authz_mhd_start(&config, &error, error.count)
        }
        guard let started else {
            throw ServerStartError(message: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        daemon.withLock { $0 = DaemonHandle(pointer: started) }
    }

    /// The port the server listens on (the kernel's choice when configured with 0).
    public var port: Int {
        daemon.withLock { $0.map { Int(authz_mhd_bound_port($0.pointer)) } ?? 0 }
    }

    /// The revision being served.
    public var revision: UInt64 { engine.store.current.revision }

    /// Swaps in new membership data (bound to the current policy), marks the server ready
    /// (unless `ready` is false: then it stays as it was) and returns the new revision:
    /// `revision` if given, else the previous one plus one.
    @discardableResult
    public func publish(_ directory: Directory, revision: UInt64? = nil, ready: Bool = true) -> UInt64 {
        engine.publish(directory, revision: revision, ready: ready)
    }

    /// Marks the server ready (`/readyz` 200) with the data published so far.
    public func markReady() {
        engine.setReady()
    }

    /// Builds the next directory from the one being served and publishes it, serialized with
    /// every other change (so a change computed from a snapshot cannot overwrite a reload).
    /// Return nil to publish nothing. Returns the new revision, if any.
    @discardableResult
    public func update<E: Error>(_ body: (Directory) throws(E) -> Directory?) throws(E) -> UInt64? {
        try engine.update(body)
    }

    /// Attaches the durable membership writer: `/v1/sync` applies batches through it, and
    /// policy reloads rebind its data. Its publications should go to `publish(_:revision:)`.
    public func attach(_ writer: MembershipSync) {
        engine.membership.withLock { $0 = writer }
    }

    /// Reloads the policy through the loader and swaps it in; on error the old one keeps serving.
    @discardableResult
    public func reloadPolicy() -> Result<ReloadSummary, PolicyLoadError> {
        engine.reloadPolicy()
    }

    /// Stops accepting connections, waits (up to `gracePeriod`) for requests in flight to
    /// finish, then closes every connection and joins the threads. A sync still running after
    /// the grace period is waited for (libmicrohttpd cannot stop with its connection suspended,
    /// and its answer says whether it was committed), raised to normal priority so that it
    /// ends soon. Detaches the membership writer (`attach`). Idempotent.
    public func shutdown(gracePeriod: Duration = .seconds(10)) {
        guard let d = daemon.withLock({ $0 }) else {
            // Never started (or stopped already): still let go of the writer.
            engine.membership.withLock { $0 = nil }
            return
        }
        engine.draining.store(true, ordering: .relaxed)
        authz_mhd_stop_accepting(d.pointer)
        let deadline = ContinuousClock.now + gracePeriod
        while engine.inFlight.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline {
            usleep(5_000)
        }
        // From here a sync is refused (503, nothing changed), and one already running is
        // waited for, raised to normal priority (again every 100 ms, in case its thread had
        // not lowered itself yet), then given a moment for its answer to go out.
        var running = engine.syncGate.withLock { g in
            g.closed = true
            return g.suspended
        }
        if running > 0 {
            var rounds = 0
            while running > 0 {
                if rounds % 20 == 0 {
                    var refused: Int32 = 0
                    _ = authz_raise_idle_threads(&refused)
                }
                rounds += 1
                usleep(5_000)
                running = engine.syncGate.withLock { $0.suspended }
            }
            let sent = ContinuousClock.now + .seconds(5)
            while engine.inFlight.load(ordering: .relaxed) > 0 && ContinuousClock.now < sent { usleep(5_000) }
        }
        daemon.withLock { $0 = nil }
        MHD_stop_daemon(d.pointer)
        // The writer publishes to this server (its closure holds it, as `authz serve`'s and
        // the tests' do): let go of it, or the two would keep each other alive.
        engine.membership.withLock { $0 = nil }
    }
}
