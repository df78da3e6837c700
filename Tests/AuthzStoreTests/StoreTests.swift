import AuthzCore
import AuthzData
@testable import AuthzStore
import Foundation
import GRDBSQLite
import Synchronization
import Testing

private let now = Timestamp(rfc3339: "2026-06-01T00:00:00Z")!

/// A small policy built in code: the store is policy-agnostic.
func policy() throws -> CompiledPolicy {
    try CompiledPolicy(PolicyDefinition(
        name: "t", permissions: ["write:x", "delete:x"],
        assignments: [.init(name: "viewer", permissions: []), .init(name: "dev", aliases: ["developer"], permissions: ["write:x"])],
        impliedAssignment: "viewer",
        resourceTypes: [
            .init(name: "thing", actions: [
                .init(name: "read", requirement: .member),
                .init(name: "write", requirement: .anyOf(["write:x"])),
                .init(name: "delete", requirement: .anyOf(["delete:x"])),
            ]),
            .init(name: "invitation", actions: [.init(name: "accept", requirement: .invitee)]),
        ]))
}

func records(_ text: String) -> [LocatedRecord] {
    let d = RecordCodec.decodeLines(text)
    precondition(d.errors.isEmpty, "\(d.errors)")
    return d.records
}

func tempStore() throws -> (MembershipStore, String) {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("store-\(UUID().uuidString)/authz.sqlite").path
    return (try MembershipStore(path: path), path)
}

/// A store holding `seed`, closed again (so that another connection, or another store of
/// the path, finds it as a restart would): its path.
func seededStore() throws -> String {
    let (store, path) = try tempStore()
    let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
    _ = try sync.sync(records(seed), mode: .apply).get()
    return path
}

private func inode(_ path: String) throws -> UInt64 {
    var st = stat()
    guard stat(path, &st) == 0 else { throw CocoaError(.fileNoSuchFile) }
    return UInt64(st.st_ino)
}

private func allowed(_ d: Directory, _ s: String, _ a: String, _ org: String) -> Bool {
    (try? d.check(subject: s, action: a, resource: "thing:t", org: org, now: now).allowed) ?? false
}

let seed = """
{"kind":"org","id":"acme"}
{"kind":"org","id":"beta","personal":true,"suspended":true,"suspended_until":"2026-07-01T00:00:00.5Z"}
{"kind":"user","id":"u1","email":"A@x.io","email_verified":true}
{"kind":"role","org":"acme","id":"cleaner","permissions":["delete:x"]}
{"kind":"member","org":"acme","user":"u1","role":"member","assignments":["developer","cleaner"]}
{"kind":"member","org":"acme","user":"u2","role":"owner"}
{"kind":"member","org":"beta","user":"u1","role":"member"}
{"kind":"api_key","id":"k1","org":"acme","user":"u1","permissions":["write:x"],"expires_at":"2027-01-01T00:00:00Z"}
{"kind":"invitation","id":"i1","org":"acme","email":"b@x.io","role":"member","assignments":["cleaner"],"status":"pending","expires_at":null}
"""

@Suite struct StoreTests {
    @Test func newStoreIsEmptyAtRevisionZero() throws {
        let (store, _) = try tempStore()
        let (r, rev) = try store.load()
        #expect(r.isEmpty)
        #expect(rev == 0)
    }

    @Test func appliedBatchesSurviveReopeningExactly() throws {
        let (store, path) = try tempStore()
        let p = try policy()
        let published = Published()
        let sync = try MembershipSync(store: store, policy: p, publish: published.set)
        #expect(try sync.sync(records(seed), mode: .apply).get().revision == 1)
        let second = """
        {"kind":"member","org":"acme","user":"u3","role":"member","assignments":["dev"]}
        {"kind":"member","op":"delete","org":"beta","user":"u1"}
        {"kind":"api_key","op":"delete","id":"k1"}
        """
        let outcome = try sync.sync(records(second), mode: .apply).get()
        #expect(outcome == .init(revision: 2, upserted: 1, deleted: 2))
        #expect(published.revision == 2)

        let reopened = try MembershipSync(store: try MembershipStore(path: path), policy: p, publish: { _, _ in })
        let (d, rev) = reopened.current
        #expect(rev == 2)
        #expect(d.counts == sync.current.directory.counts)
        // Same records, same answers.
        #expect(Set(d.records()) == Set(sync.current.directory.records()))
        #expect(allowed(d, "user:u3", "write", "acme"))
        #expect(!allowed(d, "user:u1", "read", "beta"))
        #expect(!allowed(d, "api_key:k1", "read", "acme"))
        #expect(allowed(d, "user:u1", "delete", "acme"))
    }

    @Test func cascadesInTheStoreMatchTheDirectory() throws {
        let (store, path) = try tempStore()
        let p = try policy()
        let sync = try MembershipSync(store: store, policy: p, publish: { _, _ in })
        _ = try sync.sync(records(seed), mode: .apply).get()
        _ = try sync.sync(records("""
        {"kind":"user","op":"delete","id":"u1"}
        {"kind":"org","op":"delete","id":"beta"}
        """), mode: .apply).get()
        let live = sync.current.directory
        #expect(live.counts.members == 1)
        #expect(live.counts.apiKeys == 0)
        let (loaded, _) = try MembershipStore(path: path).load()
        #expect(Set(loaded.map(\.record)) == Set(live.records()))
        _ = try sync.sync(records(#"{"kind":"org","op":"delete","id":"acme"}"#), mode: .apply).get()
        #expect(try MembershipStore(path: path).load().records.isEmpty)
    }

    @Test func invalidBatchChangesNothingAnywhere() throws {
        let (store, path) = try tempStore()
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        _ = try sync.sync(records(seed), mode: .apply).get()
        let before = Set(sync.current.directory.records())
        let bad = """
        {"kind":"member","org":"acme","user":"u9","role":"member"}
        {"kind":"member","org":"nowhere","user":"u9","role":"member"}
        {"kind":"role","op":"delete","org":"acme","id":"cleaner"}
        """
        guard case .failure(.invalid(let errors)) = sync.sync(records(bad), mode: .apply) else {
            Issue.record("an invalid batch was accepted")
            return
        }
        #expect(errors.map(\.line) == [2, 3])
        #expect(errors.first?.field == "org")
        #expect(sync.current.revision == 1)
        #expect(Set(sync.current.directory.records()) == before)
        #expect(try MembershipStore(path: path).revision() == 1)
        #expect(Set(try MembershipStore(path: path).load().records.map(\.record)) == before)
    }

    @Test func ifRevisionGuardsAgainstASecondWriter() throws {
        let (store, _) = try tempStore()
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        _ = try sync.sync(records(seed), mode: .apply, ifRevision: 0).get()
        guard case .failure(.conflict(let current)) = sync.sync(records(#"{"kind":"org","id":"z"}"#), mode: .apply, ifRevision: 0) else {
            Issue.record("a stale if_revision was accepted")
            return
        }
        #expect(current == 1)
        #expect(sync.current.directory.counts.orgs == 2)
        #expect(try sync.sync(records(#"{"kind":"org","id":"z"}"#), mode: .apply, ifRevision: 1).get().revision == 2)
    }

    @Test func replaceRemovesEverythingNotInTheBody() throws {
        let (store, path) = try tempStore()
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        _ = try sync.sync(records(seed), mode: .apply).get()
        let outcome = try sync.sync(records("""
        {"kind":"org","id":"acme"}
        {"kind":"member","org":"acme","user":"u7","role":"owner"}
        """), mode: .replace).get()
        #expect(outcome.revision == 2)
        #expect(outcome.upserted == 2)
        #expect(outcome.deleted == 8)   // 9 seed records; `acme` stays
        let d = sync.current.directory
        #expect(d.counts == .init(orgs: 1, users: 0, members: 1, roles: 0, apiKeys: 0, invitations: 0))
        #expect(!allowed(d, "user:u1", "read", "acme"))
        #expect(Set(try MembershipStore(path: path).load().records.map(\.record)) == Set(d.records()))
    }

    /// A replace writes its rows sorted by key while the directory is built in batch order:
    /// a key sent twice keeps its last record, and a batch with deletes (written in order,
    /// since a delete cascades) ends the same in the store as in the directory.
    @Test func replaceWithRepeatedKeysAndDeletesStoresWhatTheDirectoryHolds() throws {
        for body in [
            """
            {"kind":"org","id":"acme"}
            {"kind":"member","org":"acme","user":"u1","role":"member","assignments":["dev"]}
            {"kind":"org","id":"acme","suspended":true}
            {"kind":"member","org":"acme","user":"u1","role":"owner"}
            {"kind":"user","id":"u1","email":"a@x.io","email_verified":false}
            {"kind":"user","id":"u1","email":"b@x.io","email_verified":true}
            """,
            seed + """

            {"kind":"member","org":"acme","user":"u1","op":"delete"}
            {"kind":"org","id":"gamma"}
            {"kind":"user","id":"u2","op":"delete"}
            {"kind":"member","org":"gamma","user":"u9","role":"owner"}
            {"kind":"org","id":"beta","op":"delete"}
            {"kind":"org","id":"beta"}
            {"kind":"member","org":"beta","user":"u1","role":"member"}
            """,
        ] {
            let (store, path) = try tempStore()
            let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
            _ = try sync.sync(records(seed), mode: .apply).get()
            _ = try sync.sync(records(body), mode: .replace).get()
            let expected = Set(sync.current.directory.records())
            #expect(Set(try MembershipStore(path: path).load().records.map(\.record)) == expected)
            let reopened = try MembershipSync(store: try MembershipStore(path: path), policy: try policy(), publish: { _, _ in })
            #expect(Set(reopened.current.directory.records()) == expected)
        }
    }

    /// The rows of a replace are written while it is validated: an error anywhere, even far
    /// into a large batch, leaves the store and the directory as they were.
    @Test func invalidReplaceChangesNothingWhereverTheErrorIs() throws {
        let (store, path) = try tempStore()
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        _ = try sync.sync(records(seed), mode: .apply).get()
        let before = Set(sync.current.directory.records())
        var lines = (0..<40_000).map { #"{"kind":"org","id":"o\#($0)"}"# }
        for errorAt in [0, 39_999] {
            var bad = lines
            bad[errorAt] = #"{"kind":"member","org":"nowhere","user":"u1","role":"member"}"#
            guard case .failure(.invalid(let errors)) = sync.sync(records(bad.joined(separator: "\n")), mode: .replace) else {
                Issue.record("an invalid replace was accepted")
                return
            }
            #expect(errors.map(\.line) == [errorAt + 1])
            #expect(sync.current.revision == 1)
            #expect(Set(sync.current.directory.records()) == before)
            #expect(try MembershipStore(path: path).revision() == 1)
            #expect(Set(try MembershipStore(path: path).load().records.map(\.record)) == before)
            // Nothing is left of the new file the replace was being written into.
            #expect(!FileManager.default.fileExists(atPath: path + ".new"))
        }
        lines.append(#"{"kind":"member","org":"o7","user":"u1","role":"owner"}"#)
        #expect(try sync.sync(records(lines.joined(separator: "\n")), mode: .replace).get().upserted == 40_001)
        #expect(try MembershipStore(path: path).load().records.count == 40_001)
    }

    /// A start-up reads the store on a second thread, in chunks of bytes: every kind of row,
    /// NULLs, timestamps, repeated and distinct lists, over many chunks, load back exactly.
    @Test func aLargeStoreLoadsBackExactly() throws {
        let (store, path) = try tempStore()
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        var lines: [String] = []
        for o in 0..<300 {
            let org = "org-\(o)-" + String(repeating: "x", count: o % 40)
            lines.append(#"{"kind":"org","id":"\#(org)","personal":\#(o % 7 == 0),"suspended":\#(o % 5 == 0),"suspended_until":\#(o % 10 == 0 ? #""2026-07-01T00:00:00Z""# : "null")}"#)
            lines.append(#"{"kind":"role","org":"\#(org)","id":"custom-role-\#(o)-0123456789abcdef0123456789","permissions":["write:x"]}"#)
            for m in 0..<100 {
                let user = "user-\(m)-" + String(repeating: "u", count: m % 30)
                let assignments = [#"[]"#, #"["dev"]"#, #"["developer"]"#, #"["dev","custom-role-\#(o)-0123456789abcdef0123456789"]"#][(m + o) % 4]
                lines.append(#"{"kind":"member","org":"\#(org)","user":"\#(user)","role":"\#(m == 0 ? "owner" : "member")","assignments":\#(assignments)}"#)
            }
            lines.append(#"{"kind":"api_key","id":"key-\#(o)","org":"\#(org)","user":"user-1-u","permissions":["write:x"],"expires_at":\#(o % 2 == 0 ? #""2027-01-01T00:00:00Z""# : "null")}"#)
            lines.append(#"{"kind":"invitation","id":"inv-\#(o)","org":"\#(org)","email":"i\#(o)@x.io","role":"member","assignments":["dev"],"status":"pending","expires_at":null}"#)
        }
        for m in 0..<100 {
            let user = "user-\(m)-" + String(repeating: "u", count: m % 30)
            lines.append(#"{"kind":"user","id":"\#(user)","email":\#(m % 3 == 0 ? "null" : #""U\#(m)@x.io""#),"email_verified":\#(m % 2 == 0)}"#)
        }
        _ = try sync.sync(records(lines.joined(separator: "\n")), mode: .replace).get()
        let expected = Set(sync.current.directory.records())
        #expect(expected.count == lines.count)
        let (loaded, revision) = try MembershipStore(path: path).load()
        #expect(revision == 1)
        #expect(loaded.count == lines.count)
        #expect(Set(loaded.map(\.record)) == expected)
        let reopened = try MembershipSync(store: try MembershipStore(path: path), policy: try policy(), publish: { _, _ in })
        #expect(Set(reopened.current.directory.records()) == expected)
        #expect(reopened.current.directory.counts.users == 100)
    }

    /// The sizes a start-up reserves for, counted by SQL when the store does not remember them
    /// (after an apply), are the ones counting the records gives: members whose org and user
    /// are both canonical lowercase UUIDs apart (they are kept in `MemberIndex`).
    @Test func countedSizesAreTheRecordsSizes() throws {
        let (store, _) = try tempStore()
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        let o1 = "0f8fad5b-d9cb-469f-a165-70867728950e", o2 = "0F8FAD5B-D9CB-469F-A165-70867728950F"
        let users = ["7c9e6679-7425-40de-944b-e07fc1f90ae7", "7C9E6679-7425-40DE-944B-E07FC1F90AE7", "u1",
                     "7c9e6679-7425-40de-944b-e07fc1f90ae", "7c9e6679-7425-40de-944b-e07fc1f90ae7x", "7c9e6679x7425-40de-944b-e07fc1f90ae7"]
        var lines = [o1, o2, "acme"].map { #"{"kind":"org","id":"\#($0)"}"# }
        for org in [o1, o2, "acme"] {
            for user in users { lines.append(#"{"kind":"member","org":"\#(org)","user":"\#(user)","role":"member"}"#) }
        }
        let batch = records(lines.joined(separator: "\n"))
        _ = try sync.sync(batch, mode: .apply).get()
        var expected = DirectoryBuilder.Expected()
        for r in batch { expected.count(r.record) }
        let counted = try store.expectedSizes()
        #expect(expected.indexedMembers == 1)
        let sizes: (DirectoryBuilder.Expected) -> [Int] = { [$0.members, $0.memberKeyBytes, $0.indexedMembers, $0.orgs] }
        #expect(sizes(counted) == sizes(expected))
    }

    /// A start-up builds the users on the store's reading thread, apart from the rest: a store
    /// that no longer fits the policy is refused with the errors, in the order, that one
    /// builder given every row in the store's order finds.
    @Test func aStoreThatNoLongerFitsIsRefusedWithTheSameErrors() throws {
        let (store, path) = try tempStore()
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        var lines = [#"{"kind":"org","id":"acme"}"#]
        for u in 0..<2_000 { lines.append(#"{"kind":"user","id":"u\#(u)","email":"U\#(u)@x.io","email_verified":true}"#) }
        for u in 0..<2_000 { lines.append(#"{"kind":"member","org":"acme","user":"u\#(u)","role":"member","assignments":\#(u % 3 == 0 ? #"["dev"]"# : "[]")}"#) }
        _ = try sync.sync(records(lines.joined(separator: "\n")), mode: .replace).get()
        // The same policy without `dev`.
        let narrower = try CompiledPolicy(PolicyDefinition(
            name: "narrower", permissions: ["write:x"], assignments: [.init(name: "viewer", permissions: [])], impliedAssignment: "viewer",
            resourceTypes: [.init(name: "thing", actions: [.init(name: "read", requirement: .member)])]))
        var whole = DirectoryBuilder(policy: narrower)
        for r in try MembershipStore(path: path).load().records { whole.add(r.record) }
        var expected: [DataError] = []
        do { _ = try whole.finish() } catch { expected = error.errors }
        #expect(expected.count == 100)
        do {
            _ = try MembershipSync(store: try MembershipStore(path: path), policy: narrower, publish: { _, _ in })
            Issue.record("a store that does not fit the policy was loaded")
        } catch MembershipSync.Failure.storage(let message) {
            #expect(message.hasSuffix(": " + expected.prefix(5).map(\.description).joined(separator: "; ")))
        }
    }

    /// A replace whose rename is done but whose directory sync fails may be on disk or not:
    /// it is not reported as "nothing changed". The writer keeps serving what it had, refuses
    /// this and every later batch (writing nothing), and a restart loads the store as it is.
    @Test func aFailurePastTheRenameLeavesTheStateUnknownAndRefusesLaterSyncs() throws {
        let (store, path) = try tempStore()
        let published = Published()
        let sync = try MembershipSync(store: store, policy: try policy(), publish: published.set)
        _ = try sync.sync(records(seed), mode: .apply).get()
        let before = Set(sync.current.directory.records())
        store.failing.withLock { $0 = .afterRename }
        let replacement = #"{"kind":"org","id":"solo"}"# + "\n" + #"{"kind":"member","org":"solo","user":"u1","role":"owner"}"#
        guard case .failure(.storeStateUnknown(let message)) = sync.sync(records(replacement), mode: .replace) else {
            Issue.record("a replace that failed after its rename was not reported as of unknown state")
            return
        }
        #expect(message.contains("renamed over the store"))
        // What is served is what was acknowledged.
        #expect(sync.current.revision == 1)
        #expect(Set(sync.current.directory.records()) == before)
        #expect(published.revision == 1)
        store.failing.withLock { $0 = nil }
        // Later batches are refused and write nothing, though the store itself works again.
        guard case .failure(.syncsRefused(let why)) = sync.sync(records(#"{"kind":"org","id":"later"}"#), mode: .apply) else {
            Issue.record("a batch after the unknown state was not refused")
            return
        }
        #expect(why.contains("the sync to revision 2"))
        #expect(try store.revision() == 2)
        // A restart reads the store as it is: here, the replace (it was renamed into place).
        let restarted = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        #expect(restarted.current.revision == 2)
        #expect(Set(restarted.current.directory.records()) == Set(records(replacement).map(\.record)))
        #expect(try restarted.sync(records(#"{"kind":"org","id":"later"}"#), mode: .apply).get().revision == 3)
        _ = path
    }

    /// A replace closes the store for its swap and opens it again after the rename. Should that
    /// open fail, this process has no store to write to: the state is unknown, the writer keeps
    /// serving what was acknowledged and refuses every later sync, and a restart loads the
    /// store as it is (the replace, renamed into place).
    @Test func aStoreThatCannotBeOpenedAgainAfterAReplaceRefusesSyncsUntilARestart() throws {
        let path: String
        let before: Set<Record>
        let replacement = #"{"kind":"org","id":"solo"}"# + "\n" + #"{"kind":"member","org":"solo","user":"u1","role":"owner"}"#
        do {
            let (store, p) = try tempStore()
            path = p
            let published = Published()
            let sync = try MembershipSync(store: store, policy: try policy(), publish: published.set)
            _ = try sync.sync(records(seed), mode: .apply).get()
            before = Set(sync.current.directory.records())
            store.failing.withLock { $0 = .reopen }
            guard case .failure(.storeStateUnknown(let message)) = sync.sync(records(replacement), mode: .replace) else {
                Issue.record("a replace whose store could not be opened again was not reported as of unknown state")
                return
            }
            #expect(message.contains("could not be opened again after a replace renamed over it"), "\(message)")
            #expect(sync.current.revision == 1)
            #expect(Set(sync.current.directory.records()) == before)
            #expect(published.revision == 1)
            // The open would work now; the writer still refuses, and writes nothing.
            store.failing.withLock { $0 = nil }
            for mode in [MembershipSync.Mode.apply, .replace] {
                guard case .failure(.syncsRefused) = sync.sync(records(#"{"kind":"org","id":"later"}"#), mode: mode) else {
                    Issue.record("a \(mode) after the unknown state was not refused")
                    return
                }
            }
            #expect(sync.current.revision == 1)
        }
        // The restart: the replace is what the file holds.
        let restarted = try MembershipSync(store: try MembershipStore(path: path), policy: try policy(), publish: { _, _ in })
        #expect(restarted.current.revision == 2)
        #expect(Set(restarted.current.directory.records()) == Set(records(replacement).map(\.record)))
        #expect(Set(restarted.current.directory.records()) != before)
        #expect(try restarted.sync(records(#"{"kind":"org","id":"later"}"#), mode: .apply).get().revision == 3)
    }

    /// A record made in Swift can hold a timestamp RFC 3339 cannot write: such a batch is
    /// refused (line and field) rather than acknowledged into a store that would not load.
    @Test func aTimestampTheStoreCouldNotReadBackIsRefused() throws {
        let (store, path) = try tempStore()
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        _ = try sync.sync(records(seed), mode: .apply).get()
        let far = Timestamp(seconds: 300_000_000_000)
        let cases: [Record] = [
            .apiKey(.init(id: "k9", org: "acme", user: "u1", permissions: ["write:x"], expiresAt: far)),
            .invitation(.init(id: "i9", org: "acme", email: "c@x.io", role: "member", assignments: [], status: "pending",
                              expiresAt: Timestamp(seconds: 0, nanoseconds: -1))),
            .org(.init(id: "later", suspended: true, suspendedUntil: Timestamp(seconds: -62_167_219_201))),
        ]
        for (record, field) in zip(cases, ["expires_at", "expires_at", "suspended_until"]) {
            guard case .failure(.invalid(let errors)) = sync.sync([LocatedRecord(line: 7, record: record)], mode: .apply) else {
                Issue.record("accepted: \(record)")
                continue
            }
            #expect(errors.map(\.line) == [7])
            #expect(errors.first?.field == field)
        }
        #expect(sync.current.revision == 1)
        // The bounds themselves are kept and read back.
        let edges = [Timestamp(seconds: -62_167_219_200), Timestamp(seconds: 253_402_300_799, nanoseconds: 999_999_999)]
        for t in edges { #expect(Timestamp(rfc3339: t.description) == t, "\(t)") }
        _ = try sync.sync([LocatedRecord(line: 1, record: .apiKey(.init(id: "k8", org: "acme", user: "u1", permissions: [],
                                                                                expiresAt: edges[1])))], mode: .apply).get()
        let reopened = try MembershipStore(path: path).load().records.map(\.record)
        #expect(reopened.contains(.apiKey(.init(id: "k8", org: "acme", user: "u1", permissions: [], expiresAt: edges[1]))))
    }

    /// A stored value that does not read back (a store edited by hand, or damaged) is not
    /// guessed at: a timestamp that does not parse is not "never" (an api key would stop
    /// expiring), and a flag that is not 0 or 1 is not false (a suspension would lift). The
    /// load stops and names the row, the column and the value; the store is left as it was.
    @Test func aDamagedStoredValueIsRefusedNotGuessed() throws {
        let path = try seededStore()
        let timestamp = "an RFC 3339 timestamp", flag = "0 or 1"
        let cases: [(sql: String, table: String, key: [String], column: String, value: String, expected: String)] = [
            ("UPDATE api_keys SET expires_at = 'next tuesday' WHERE id = 'k1'", "api_keys", ["k1"], "expires_at", "next tuesday", timestamp),
            ("UPDATE invitations SET expires_at = '2026-13-01T00:00:00Z' WHERE id = 'i1'", "invitations", ["i1"], "expires_at",
             "2026-13-01T00:00:00Z", timestamp),
            ("UPDATE orgs SET suspended_until = '' WHERE id = 'beta'", "orgs", ["beta"], "suspended_until", "", timestamp),
            ("UPDATE orgs SET suspended = 'yes' WHERE id = 'beta'", "orgs", ["beta"], "suspended", "yes", flag),
            ("UPDATE orgs SET personal = 2 WHERE id = 'acme'", "orgs", ["acme"], "personal", "2", flag),
            ("UPDATE users SET email_verified = 'true' WHERE id = 'u1'", "users", ["u1"], "email_verified", "true", flag),
        ]
        for c in cases {
            let saved = try Data(contentsOf: URL(fileURLWithPath: path))
            try execute(path, c.sql)
            do {
                _ = try MembershipSync(store: try MembershipStore(path: path), policy: try policy(), publish: { _, _ in })
                Issue.record("a store with a damaged \(c.table).\(c.column) was loaded")
            } catch let error as MembershipStore.UnreadableRow {
                #expect(error.table == c.table)
                #expect(error.key == c.key)
                #expect(error.column == c.column)
                #expect(error.value == c.value)
                #expect(error.description == "table \(c.table), row '\(c.key[0])': \(c.column) is '\(c.value)', not \(c.expected)")
            }
            #expect(try MembershipStore(path: path).revision() == 1)
            try saved.write(to: URL(fileURLWithPath: path))
        }
        // A long damaged value is shown in part.
        let long = MembershipStore.UnreadableRow(table: "api_keys", key: ["k1"], column: "expires_at",
                                                 value: String(repeating: "x", count: 5_000), expected: "an RFC 3339 timestamp")
        #expect(long.description == "table api_keys, row 'k1': expires_at is '\(String(repeating: "x", count: 100))...', not an RFC 3339 timestamp")
        // Put back, the store loads again.
        #expect(try MembershipStore(path: path).load().records.count == records(seed).count)
    }

    /// The load stops at the first unreadable row, while the reading thread has many chunks
    /// still to send: it stops too, rather than wait for chunks nobody takes.
    @Test func anUnreadableRowEarlyStopsTheReadingThreadToo() throws {
        let path = try seededStore()
        // Orgs are read first; 60,000 members after them are over 6 MB of chunks (depth 4 of 1 MB).
        try execute(path, """
            UPDATE orgs SET suspended_until = 'soon' WHERE id = 'beta';
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
            INSERT INTO members (org, user, role, assignments) SELECT 'acme', printf('user-%060d', i), 'member', 'dev' FROM n;
            """)
        let finished = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<Int64, any Error>?>(nil)
        Thread.detachNewThread {
            let result = Result { try MembershipStore(path: path).load { _ in } }
            outcome.withLock { $0 = result }
            finished.signal()
        }
        #expect(finished.wait(timeout: .now() + 60) == .success, "the load did not return")
        let result = outcome.withLock { $0 }
        guard case .failure(let error as MembershipStore.UnreadableRow) = result else {
            Issue.record("expected the unreadable row, got \(String(describing: result))")
            return
        }
        #expect(error.table == "orgs" && error.key == ["beta"] && error.value == "soon")
    }

    /// A replace renames a new file over the store; another store of the same path open in
    /// the process would then go on reading (and writing) the replaced file. So with one
    /// open, the replace is made in place, and both see it; alone again, by rename.
    @Test func replaceWhileAnotherStoreOfThePathIsOpen() throws {
        let (store, path) = try tempStore()
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        _ = try sync.sync(records(seed), mode: .apply).get()
        var other: MembershipStore? = try MembershipStore(path: path)
        #expect(try other?.revision() == 1)
        let inPlace = try inode(path)
        _ = try sync.sync(records(#"{"kind":"org","id":"solo"}"# + "\n" + #"{"kind":"member","org":"solo","user":"u1","role":"owner"}"#), mode: .replace).get()
        #expect(try inode(path) == inPlace)
        #expect(try other?.revision() == 2)
        #expect(Set(try other?.load().records.map(\.record) ?? []) == Set(sync.current.directory.records()))
        other = nil
        _ = try sync.sync(records(seed), mode: .replace).get()
        #expect(try inode(path) != inPlace, "alone again, the replace renames a new file over the store")
        let reopened = try MembershipStore(path: path)
        #expect(try reopened.revision() == 3)
        #expect(Set(try reopened.load().records.map(\.record)) == Set(sync.current.directory.records()))
        // The store keeps taking batches after a swap.
        _ = try sync.sync(records(#"{"kind":"org","id":"after"}"#), mode: .apply).get()
        #expect(try reopened.revision() == 4)
    }
}

/// Records what was published last.
private final class Published: @unchecked Sendable {
    private let lock = NSLock()
    private var _revision: Int64 = -1
    var revision: Int64 { lock.withLock { _revision } }
    var set: @Sendable (Directory, Int64) -> Void {
        { [self] _, r in lock.withLock { _revision = r } }
    }
}

@Suite("Store files: durability settings and what else holds the file")
struct StoreFileTests {
    /// GRDB turns `synchronous` to NORMAL when it sets up WAL; the store's writer must commit
    /// with FULL (a commit on disk before it returns), after opening and after a swap.
    @Test func theWriterCommitsWithSynchronousFull() throws {
        let (store, _) = try tempStore()
        #expect(try store.writerSynchronousMode() == 2)
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        _ = try sync.sync(records(seed), mode: .replace).get()
        #expect(try store.writerSynchronousMode() == 2)
    }

    /// A connection of another program (a `sqlite3` shell) with the store open: a replace by
    /// rename would leave it on the old file, sharing the -wal with the new one. The replace
    /// is made in place instead, and that connection sees it.
    @Test func aForeignConnectionKeepsTheReplaceInPlace() throws {
        let (store, path) = try tempStore()
        let sync = try MembershipSync(store: store, policy: try policy(), publish: { _, _ in })
        _ = try sync.sync(records(seed), mode: .apply).get()
        var shell: OpaquePointer?
        #expect(sqlite3_open_v2(path, &shell, SQLITE_OPEN_READONLY, nil) == SQLITE_OK)
        defer { sqlite3_close(shell) }
        #expect(revision(shell) == 1)
        let before = try inode(path)
        _ = try sync.sync(records(#"{"kind":"org","id":"solo"}"#), mode: .replace).get()
        #expect(try inode(path) == before)
        #expect(revision(shell) == 2)
        let reopened = try MembershipStore(path: path)
        #expect(Set(try reopened.load().records.map(\.record)) == Set(sync.current.directory.records()))
    }

    /// A store reached through a symbolic link: a replace renames over the link's target,
    /// and the link stays a link.
    @Test func aReplaceThroughASymlinkReplacesTheTarget() throws {
        let target = try seededStore()
        let before = try inode(target)
        let link = FileManager.default.temporaryDirectory.appendingPathComponent("store-link-\(UUID().uuidString).sqlite").path
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        defer { try? FileManager.default.removeItem(atPath: link) }
        let viaLink = try MembershipSync(store: try MembershipStore(path: link), policy: try policy(), publish: { _, _ in })
        _ = try viaLink.sync(records(#"{"kind":"org","id":"solo"}"#), mode: .replace).get()
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == target)
        #expect(try inode(target) != before, "renamed over the target")
        #expect(try MembershipStore(path: target).revision() == 2)
    }
}

/// Runs `sql` on the store through a plain SQLite connection (another program's).
private func execute(_ path: String, _ sql: String) throws {
    var db: OpaquePointer?
    guard sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, nil) == SQLITE_OK else { throw CocoaError(.fileReadUnknown) }
    defer { sqlite3_close(db) }
    var message: UnsafeMutablePointer<CChar>?
    guard sqlite3_exec(db, sql, nil, nil, &message) == SQLITE_OK else {
        defer { sqlite3_free(message) }
        throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: String(cString: message!)])
    }
}

/// The revision a plain SQLite connection reads from the store.
private func revision(_ db: OpaquePointer?) -> Int64 {
    var statement: OpaquePointer?
    guard sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'revision'", -1, &statement, nil) == SQLITE_OK else { return -1 }
    defer { sqlite3_finalize(statement) }
    return sqlite3_step(statement) == SQLITE_ROW ? sqlite3_column_int64(statement, 0) : -1
}
