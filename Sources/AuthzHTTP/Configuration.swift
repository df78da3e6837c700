import AuthzCore

/// How `AuthzServer` listens and what it accepts.
public struct ServerConfiguration: Sendable {
    /// Address or host name to bind.
    public var host: String = "127.0.0.1"
    /// 0 lets the kernel choose; `AuthzServer.port` tells which.
    public var port: Int = 8180
    /// Size of the libmicrohttpd thread pool.
    public var threads: Int = 1
    /// At most this many open connections.
    public var connectionLimit: Int = 1024
    /// Seconds a connection may stay idle (or send nothing) before it is closed.
    public var connectionTimeout: Int = 30
    /// Largest request body accepted, in bytes; more is 413.
    public var maxBodySize: Int = 1 << 20
    /// Bytes of check and batch request bodies held at once across all connections; a body
    /// that would pass it is answered 503 `overloaded`. A body of at most `BodyMemory.free`
    /// bytes is not counted (the connection limit bounds those), so small checks never contend
    /// on the count. At least `maxBodySize` is used.
    public var maxBodyMemory: Int = 64 << 20
    /// Largest `POST /v1/sync` body, in bytes (a full replace of a million records is ~110 MB).
    public var maxSyncBodySize: Int = 1 << 30
    /// How long a sync's work runs in the idle scheduling class (below every check) before it
    /// is raised to normal priority, so that it finishes even when checks leave no idle time.
    public var syncIdleLimit: Duration = .seconds(30)
    /// Most items in one `POST /v1/check/batch`; more is 413.
    public var maxBatch: Int = 1000
    /// Guards the admin routes (`POST /v1/sync`, `POST /v1/policy/reload`). Without it they answer 401.
    public var adminToken: String? = nil
    /// Guards the decision routes when set.
    public var checkToken: String? = nil

    public init() {}
}

/// A policy that could not be loaded or compiled: every error found, as messages.
public struct PolicyLoadError: Error, Sendable, Hashable, CustomStringConvertible {
    public var errors: [String]
    public init(errors: [String]) { self.errors = errors }
    public var description: String { errors.joined(separator: "\n") }
}

/// The server could not start.
public struct ServerStartError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// What a successful policy reload swapped in.
public struct ReloadSummary: Sendable, Hashable {
    public var policy: String
    public var revision: UInt64
}
