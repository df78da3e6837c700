import AuthzClient
import Foundation
import Testing

/// `AuthzClient` against a live server: what a Swift service calling it sees.
@Suite("AuthzClient")
struct AuthzClientTests {
    @Test func syncThenCheckAndBatch() async throws {
        let live = try SyncServer()
        defer { live.stop() }
        let authz = AuthzClient(server: URL(string: "http://127.0.0.1:\(live.port)")!, token: SyncServer.admin)

        let synced = try await authz.sync(Data(syncSeed.utf8))
        #expect([synced.revision, Int64(synced.upserted), Int64(synced.deleted)] == [1, 13, 0])

        let allowed = try await authz.check(subject: "user:u2", action: "create", resource: "sandbox:s", org: "acme")
        #expect(allowed.allowed)
        #expect(allowed.reason == "assignment")
        #expect(allowed.revision == 1)
        let denied = try await authz.check(subject: "user:u3", action: "create", resource: "sandbox:s", org: "acme", minRevision: 1)
        #expect(!denied.allowed)
        #expect(denied.reason == "missing_permission")

        let batch = try await authz.checkBatch([
            .init(subject: "api_key:k2", action: "create", resource: "sandbox:s", org: "acme"),
            .init(subject: "user:u9", action: "read", resource: "sandbox:s", org: "acme"),
            .init(subject: "user:u1", action: "fly", resource: "sandbox:s", org: "acme"),
        ])
        #expect(batch.revision == 1)
        #expect(batch.results.map(\.allowed) == [true, false, nil])
        #expect(batch.results.map(\.reason) == ["api_key", "not_member", nil])
        #expect(batch.results[2].error?.code == "unknown_action", "\(batch.results[2])")

        // A replace from a file: only what the file holds remains.
        let file = live.directory.appendingPathComponent("replace.jsonl")
        try Data("""
        {"kind":"org","id":"acme"}
        {"kind":"member","org":"acme","user":"u1","role":"owner"}

        """.utf8).write(to: file)
        let replaced = try await authz.sync(file: file, mode: .replace, ifRevision: 1)
        #expect(replaced.revision == 2)
        #expect(replaced.upserted == 2)
        let gone = try await authz.check(subject: "user:u2", action: "read", resource: "sandbox:s", org: "acme")
        #expect(!gone.allowed)
        #expect(gone.reason == "not_member")
        #expect(gone.revision == 2)
    }

    @Test func failuresAreTyped() async throws {
        let live = try SyncServer()
        defer { live.stop() }
        let url = URL(string: "http://127.0.0.1:\(live.port)")!
        let admin = AuthzClient(server: url, token: SyncServer.admin)

        // The server's refusals carry status, code and message.
        await #expect { try await AuthzClient(server: url, token: "wrong").sync(Data(syncSeed.utf8)) } throws: { error in
            guard case .refused(401, let code, _, _)? = error as? AuthzClient.Failure else { return false }
            return code == "unauthorized"
        }
        await #expect { try await admin.sync(Data(#"{"kind":"member","org":"nowhere","user":"u1","role":"member"}"#.utf8)) } throws: { error in
            guard case .refused(400, "invalid_data", _, let body)? = error as? AuthzClient.Failure else { return false }
            return String(decoding: body, as: UTF8.self).contains("nowhere")
        }
        await #expect { try await admin.sync(Data(syncSeed.utf8), ifRevision: 7) } throws: { error in
            guard case .refused(409, "revision_conflict", _, _)? = error as? AuthzClient.Failure else { return false }
            return true
        }
        await #expect { try await admin.check(subject: "user:u1", action: "read", resource: "sandbox:s", org: "") } throws: { error in
            guard case .refused(400, let code, _, _)? = error as? AuthzClient.Failure else { return false }
            return code == "invalid_org"
        }
        // A file that cannot be read: nothing is sent.
        await #expect { try await admin.sync(file: live.directory.appendingPathComponent("missing.jsonl")) } throws: { error in
            guard case .unreadable(let m)? = error as? AuthzClient.Failure else { return false }
            return m.contains("missing.jsonl")
        }
        // None of that changed anything.
        #expect(try live.http.readyRevision() == 0)

        // Nobody listening.
        live.stop()
        await #expect { try await admin.check(subject: "user:u1", action: "read", resource: "sandbox:s", org: "acme") } throws: { error in
            guard case .unreachable? = error as? AuthzClient.Failure else { return false }
            return true
        }
    }
}
