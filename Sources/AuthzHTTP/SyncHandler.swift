import AuthzCore
import AuthzData
import AuthzStore
import Foundation
import Logging
import Synchronization

/// `POST /v1/sync`: JSON Lines in, all or nothing, answered only after the commit is durable.
/// The query of a `/v1/sync`, read on the pool thread before the work moves off it.
struct SyncParameters: Sendable {
    var mode: String?
    var ifRevision: String?
    /// The body is gzip (`Content-Encoding: gzip`).
    var gzip = false
}

extension Engine {
    /// `body` is emptied once decoded: the records hold copies of its strings, and a replace's
    /// body (hundreds of megabytes) need not stay while the directory is built and written.
    func sync(_ body: inout [UInt8], _ parameters: SyncParameters) -> Answer {
        guard let writer = membership.withLock({ $0 }) else {
            return (503, HTTPError(status: 503, code: "not_ready", message: "the membership store is not open yet").body)
        }
        var mode = MembershipSync.Mode.apply
        if let raw = parameters.mode {
            guard let m = MembershipSync.Mode(rawValue: raw) else {
                return (400, HTTPError.invalidParameter("mode `\(raw)` must be `apply` or `replace`").body)
            }
            mode = m
        }
        var ifRevision: Int64?
        if let raw = parameters.ifRevision {
            guard let n = Int64(raw), n >= 0 else {
                return (400, HTTPError.invalidParameter("if_revision `\(raw)` must be a non-negative integer").body)
            }
            ifRevision = n
        }
        let decodeStart = ContinuousClock.now
        let compressed = body.count
        let decoded: (records: [LocatedRecord], errors: [DataError])
        if parameters.gzip {
            // Here, off the pool threads and below the checks' priority, like the decoding.
            let limit = configuration.maxSyncBodySize
            let inflated = GzipBody.oneAtATime.withLock {
                let result = body.withUnsafeBytes { GzipBody.gunzip($0, limit: limit) }
                body = []
                // Decoded under the lock too: the decompressed bytes are freed with `data`.
                return result.map { data in RecordCodec.decodeLines(data) }
            }
            switch inflated {
            case .success(let d):
                decoded = d
            case .failure(.tooLarge):
                return (413, HTTPError.payloadTooLarge("the request body exceeds \(limit) bytes once decompressed; nothing changed").body)
            case .failure(.truncated(let offset)):
                return (400, HTTPError.invalidEncoding("the gzip body ends early, after \(offset) bytes; nothing changed").body)
            case .failure(.corrupt(let offset, let detail)):
                return (400, HTTPError.invalidEncoding("the gzip body is damaged at byte \(offset): \(detail); nothing changed").body)
            case .failure(.noMemory):
                logger.error("no memory to decompress a sync body", metadata: ["compressed": "\(compressed)"])
                return (503, HTTPError(status: 503, code: "no_memory",
                                       message: "the server has no memory to decompress the body; nothing changed, send it again later").body)
            }
        } else {
            // A view of the body, not a copy (a replace can be hundreds of megabytes).
            decoded = body.withUnsafeBytes { bytes in
                RecordCodec.decodeLines(bytes.isEmpty ? Data() : Data(
                    bytesNoCopy: UnsafeMutableRawPointer(mutating: bytes.baseAddress!), count: bytes.count, deallocator: .none))
            }
            body = []
        }
        let decodeTime = ContinuousClock.now - decodeStart
        if !decoded.errors.isEmpty { return invalidData(decoded.errors) }
        switch writer.sync(decoded.records, mode: mode, ifRevision: ifRevision) {
        case .success(let o):
            metrics.synced(records: decoded.records.count)
            logger.info("sync applied", metadata: [
                "mode": "\(mode.rawValue)", "body": "\(compressed) bytes\(parameters.gzip ? " gzip" : "")", "revision": "\(o.revision)", "upserted": "\(o.upserted)", "deleted": "\(o.deleted)",
                "decode": "\(decodeTime)", "validate": "\(o.validation)", "commit": "\(o.commit)",
            ])
            var w = JSONWriter()
            w.raw("{\"revision\":")
            w.int(o.revision)
            w.raw(",\"upserted\":")
            w.int(o.upserted)
            w.raw(",\"deleted\":")
            w.int(o.deleted)
            w.raw("}\n")
            return (200, w.bytes)
        case .failure(.invalid(let errors)):
            return invalidData(errors)
        case .failure(.conflict(let current)):
            return (409, HTTPError(status: 409, code: "revision_conflict",
                                   message: "if_revision is \(ifRevision ?? -1) but the server is at revision \(current); nothing changed").body)
        case .failure(.storage(let message)):
            logger.error("sync failed to commit; nothing changed", metadata: ["error": "\(message)"])
            return (500, HTTPError(status: 500, code: "storage_error", message: "the store could not commit the batch; nothing changed").body)
        case .failure(.storeStateUnknown(let message)):
            logger.critical("the store's state is unknown: syncs are refused until a restart loads it", metadata: ["error": "\(message)"])
            return (500, HTTPError(status: 500, code: "store_state_unknown",
                                   message: "a store write failed past its commit point, so whether this batch is on disk is unknown; the server answers from the data it had and refuses syncs until it is restarted, which loads the store as it is").body)
        case .failure(.syncsRefused(let message)):
            logger.error("sync refused: the store's state is unknown since an earlier sync", metadata: ["error": "\(message)"])
            return (500, HTTPError(status: 500, code: "store_state_unknown",
                                   message: "an earlier sync failed past the store's commit point, so what the store holds is unknown; this sync changed nothing, and syncs are refused until the server is restarted, which loads the store as it is").body)
        }
    }

    /// 400 with every error: `{"error":{"code":"invalid_data","message":..,"errors":[{"line":..,"field":..,"message":..}]}}`.
    private func invalidData(_ errors: [DataError]) -> Answer {
        var w = JSONWriter(capacity: 256 + errors.count * 128)
        let first = errors.first?.description ?? ""
        // The decoder stops collecting at `maxErrors`: past that, the count is not known.
        let more = errors.count >= RecordCodec.maxErrors ? " (the first \(errors.count) are listed; there may be more)"
            : errors.count > 1 ? " (and \(errors.count - 1) more)" : ""
        w.raw("{\"error\":{\"code\":\"invalid_data\",\"message\":")
        w.string("the batch was refused, nothing changed: \(first)\(more)")
        w.raw(",\"errors\":[")
        for (i, e) in errors.enumerated() {
            if i > 0 { w.byte(0x2C) }
            w.raw("{\"line\":")
            w.int(e.line)
            w.raw(",\"field\":")
            if let f = e.field { w.string(f) } else { w.raw("null") }
            w.raw(",\"message\":")
            w.string(e.message)
            w.byte(0x7D)
        }
        w.raw("]}}\n")
        return (400, w.bytes)
    }
}
