import ArgumentParser
import AuthzCore
import AuthzData
import AuthzHTTP
import AuthzStore
import Dispatch
import Foundation
import Logging
import Synchronization

/// `authz serve`: the decision endpoint.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve decisions over HTTP (API v1).",
        discussion: """
            Tokens come from files (--admin-token-file, --check-token-file) or from the \
            environment (AUTHZ_ADMIN_TOKEN, AUTHZ_CHECK_TOKEN); they are never logged. SIGHUP \
            reloads the policy; SIGTERM and SIGINT stop accepting, finish requests in flight \
            and exit 0.
            """)

    @Option(help: "The policy file.")
    var policy = "policies/daytona.yaml"

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on (0: any free port).")
    var port = 8180

    @Option(help: "Request threads (default: the number of cores).")
    var threads: Int?

    @Option(help: "The membership store (SQLite); created if missing.")
    var store = "data/authz.sqlite"

    @Option(help: "Membership records (JSON Lines) to seed an empty store with.")
    var data: String?

    @Option(help: "Largest /v1/sync body, in bytes.")
    var maxSyncBody = 1 << 30

    @Option(help: "Seconds a sync may run below the checks' priority (idle class) before it competes with them as an equal.")
    var syncIdleLimit = 30.0

    @Option(help: "A file holding the admin token (default: $AUTHZ_ADMIN_TOKEN).")
    var adminTokenFile: String?

    @Option(help: "A file holding the token the decision routes require (default: $AUTHZ_CHECK_TOKEN; none: open).")
    var checkTokenFile: String?

    @Option(help: "Most checks in one batch request.")
    var maxBatch = 1000

    @Option(help: "Largest request body, in bytes.")
    var maxBody = 1 << 20

    @Option(help: "Bytes of check and batch bodies held at once across connections; past it, 503 overloaded (bodies of 16 KiB or less do not count). Default: 64 MiB, or --max-body if larger.")
    var maxBodyMemory: Int?

    @Option(help: "Most open connections.")
    var connectionLimit = 1024

    @Option(help: "Seconds a connection may stay idle or stall before it is closed.")
    var timeout = 30

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535") }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        guard maxBatch >= 1 else { throw ValidationError("--max-batch must be at least 1") }
        guard maxBody >= 1024 else { throw ValidationError("--max-body must be at least 1024") }
        if let maxBodyMemory, maxBodyMemory < maxBody {
            throw ValidationError("--max-body-memory (\(maxBodyMemory)) must be at least --max-body (\(maxBody)), or a largest body could never be read")
        }
        guard connectionLimit >= 1 else { throw ValidationError("--connection-limit must be at least 1") }
        guard timeout >= 1 else { throw ValidationError("--timeout must be at least 1") }
        guard syncIdleLimit >= 0, syncIdleLimit <= 86_400 else {
            throw ValidationError("--sync-idle-limit must be between 0 and 86400 seconds")
        }
    }

    func run() throws {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        let logger = Logger(label: "authz.serve")

        var configuration = ServerConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.threads = threads ?? ProcessInfo.processInfo.activeProcessorCount
        configuration.connectionLimit = connectionLimit
        configuration.connectionTimeout = timeout
        configuration.maxBodySize = maxBody
        configuration.maxBodyMemory = maxBodyMemory ?? max(64 << 20, maxBody)
        configuration.maxSyncBodySize = maxSyncBody
        configuration.syncIdleLimit = .milliseconds(Int64((syncIdleLimit * 1000).rounded()))
        configuration.maxBatch = maxBatch
        configuration.adminToken = try token(file: adminTokenFile, environment: "AUTHZ_ADMIN_TOKEN")
        configuration.checkToken = try token(file: checkTokenFile, environment: "AUTHZ_CHECK_TOKEN")

        let policyPath = policy
        let compiled: CompiledPolicy
        switch loadPolicy(path: policyPath) {
        case .success(let p): compiled = p
        case .failure(let e):
            for line in e.errors { printError("error: \(line)") }
            throw ExitCode.failure
        }
        // Listen at once (/healthz answers, /readyz says 503), then load the store.
        let server = AuthzServer(
            configuration: configuration, directory: Directory(policy: compiled), ready: false,
            logger: Logger(label: "authz.http"), policyLoader: { loadPolicy(path: policyPath) })
        do {
            try server.start()
        } catch {
            printError("error: \(error.message)")
            throw ExitCode.failure
        }
        logger.info("listening on http://\(host):\(server.port) with policy \(policyPath) (`\(compiled.name)`), \(configuration.threads) threads; loading \(store)")

        // Signals arrive on a dispatch queue, never in a signal handler. They are handled from
        // the start: SIGTERM/SIGINT while loading stop at once (nothing is acknowledged yet);
        // SIGHUP while loading is remembered and honoured once the store is attached.
        signal(SIGPIPE, SIG_IGN)
        let phase = Mutex(ServePhase.loading)
        let stopped = DispatchSemaphore(value: 0)
        let queue = DispatchQueue(label: "authz.signals")
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler {
                let loading = phase.withLock { p in
                    if p != .serving && sig == SIGHUP { p = .reloadRequested }
                    return p != .serving
                }
                if sig == SIGHUP {
                    if loading {
                        logger.notice("SIGHUP while loading: the policy will be reloaded once the store is loaded")
                    } else {
                        _ = server.reloadPolicy()
                    }
                } else {
                    logger.info("stopping: finishing requests in flight")
                    server.shutdown()
                    if loading { Foundation.exit(0) }
                    stopped.signal()
                }
            }
            source.resume()
            sources.append(source)
        }

        let loadStart = ContinuousClock.now
        let writer: MembershipSync
        do {
            // Not ready yet: /readyz turns 200 only once the store is loaded, seeded and the
            // writer attached (`markReady` below), never with an empty or half-seeded directory.
            writer = try MembershipSync(store: try MembershipStore(path: store), policy: compiled) { directory, revision in
                server.publish(directory, revision: UInt64(revision), ready: false)
            }
        } catch {
            printError("error: cannot load the store `\(store)`: \(error)")
            server.shutdown()
            throw ExitCode.failure
        }
        if let data {
            if writer.current.revision == 0 {
                try seed(writer, from: data, policy: compiled)
            } else {
                logger.notice("the store is at revision \(writer.current.revision); --data \(data) ignored (it only seeds an empty store)")
            }
        }
        server.attach(writer)
        server.markReady()
        if phase.withLock({ p in defer { p = .serving }; return p == .reloadRequested }) {
            _ = server.reloadPolicy()
        }
        let counts = writer.current.directory.counts
        logger.info("ready at revision \(writer.current.revision): \(counts.members) members in \(counts.orgs) orgs, \(counts.apiKeys) api keys, \(counts.invitations) invitations, loaded in \(ContinuousClock.now - loadStart) (store read and directory build, streamed: \(writer.loadTimes.read))")

        stopped.wait()
        sources.forEach { $0.cancel() }
        logger.info("stopped")
    }

    private enum ServePhase { case loading, reloadRequested, serving }

    /// Applies a JSON Lines file to an empty store, as revision 1.
    private func seed(_ writer: MembershipSync, from path: String, policy: CompiledPolicy) throws {
        guard let bytes = FileManager.default.contents(atPath: path) else {
            printError("error: cannot read --data `\(path)`")
            throw ExitCode.failure
        }
        let decoded = RecordCodec.decodeLines(bytes)
        var errors = decoded.errors
        if errors.isEmpty {
            switch writer.sync(decoded.records, mode: .apply) {
            case .success: return
            case .failure(.invalid(let e)): errors = e
            case .failure(let other):
                printError("error: cannot seed the store: \(other)")
                throw ExitCode.failure
            }
        }
        for e in errors { printError("\(path):\(e.line): \(e.detail)") }
        throw ExitCode.failure
    }

    /// A token from a file (trimmed) or the environment; nil when neither gives one.
    private func token(file: String?, environment name: String) throws -> String? {
        if let file {
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw ValidationError("cannot read token file `\(file)`")
            }
            let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else { throw ValidationError("token file `\(file)` is empty") }
            return token
        }
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { return nil }
        // A space the variable did not mean to hold would make the token impossible to present
        // (`Bearer` and the spaces after it are one separator), or a blank one open the routes.
        guard value.trimmingCharacters(in: .whitespacesAndNewlines) == value else {
            throw ValidationError("\(name) begins or ends with whitespace")
        }
        return value
    }
}
