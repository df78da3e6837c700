@testable import AuthzCore
import Testing

/// Member entries hold their assignment list without a reference count: the directory's
/// table must own every list a member of any live snapshot points at, with exact use counts.
/// Random batches (about half refused), snapshots kept and checked later, builders, a rebind
/// and a replace, each checked by `SharedStorageTests.listUseErrors`; and the table itself
/// against a model, with hashes forced to collide.
@Suite struct ListOwnershipTests {
    static let policy = SharedStorageTests.policy

    static let orgs = ["o0", "o1", "o2", "o3"]
    static let users = (0..<12).map { "u\($0)" }
    static let shared: [[String]] = [["dev"], ["dev", "billing"], ["viewer"], ["billing"], ["developer", "viewer"]]

    struct Gen {
        var rng: SplitMix64
        mutating func assignments() -> [String] {
            switch rng.below(6) {
            case 0: return []
            case 1, 2: return rng.pick(ListOwnershipTests.shared)           // the same array instance
            case 3: return rng.pick(ListOwnershipTests.shared).map { String(decoding: Array($0.utf8), as: UTF8.self) }
            case 4: return ["r\(rng.below(2))"]
            default: return ["dev", "r\(rng.below(2))"]
            }
        }
        mutating func record() -> Record {
            let org = rng.pick(ListOwnershipTests.orgs), user = rng.pick(ListOwnershipTests.users)
            switch rng.below(20) {
            case 0, 1: return .org(.init(id: org))
            case 2, 3: return .role(.init(org: org, id: "r\(rng.below(2))", permissions: rng.chance(0.5) ? ["read:billing"] : ["delete:sandboxes"]))
            case 4...10: return .member(.init(org: org, user: user, role: rng.chance(0.2) ? "owner" : "member", assignments: assignments()))
            case 11: return .invitation(.init(id: "i\(rng.below(6))", org: org, email: "\(user)@x.io", role: "member", assignments: assignments(), status: "pending"))
            case 12: return .delete(.member(org: org, user: user))
            case 13: return .delete(.user(user))
            case 14: return .delete(.org(org))
            case 15: return .delete(.role(org: org, id: "r\(rng.below(2))"))
            case 16: return .delete(.invitation("i\(rng.below(6))"))
            case 17: return .user(.init(id: user, email: nil, emailVerified: false))
            case 18: return .apiKey(.init(id: "k\(rng.below(4))", org: org, user: user, permissions: ["read:billing"]))
            default: return .member(.init(org: "nowhere", user: user, role: "member"))   // fails
            }
        }
    }

    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func randomBatchesKeepEverySnapshotsListsOwned(seed: UInt64) throws {
        var g = Gen(rng: SplitMix64(seed: seed))
        var base: [Record] = Self.orgs.map { .org(.init(id: $0)) }
        for o in Self.orgs { base.append(.role(.init(org: o, id: "r0", permissions: ["read:billing"]))) }
        var dir = try Directory.build(SharedStorageTests.lines(base), policy: Self.policy)
        var snapshots: [(Directory, Set<Record>)] = [(dir, Set(dir.records()))]
        var accepted: [Record] = base
        var applied = 0, refused = 0
        for step in 0..<300 {
            let batch = (0..<(1 + g.rng.below(6))).map { _ in g.record() }
            do {
                dir = try dir.applying(SharedStorageTests.lines(batch)).directory
                accepted += batch
                applied += 1
                let e = SharedStorageTests.listUseErrors(dir)
                #expect(e.isEmpty, "seed \(seed) step \(step): \(e.prefix(3))")
                if !e.isEmpty { return }
                if g.rng.chance(0.2) { snapshots.append((dir, Set(dir.records()))) }
            } catch {
                refused += 1
                let e = SharedStorageTests.listUseErrors(dir)
                #expect(e.isEmpty, "seed \(seed) step \(step) after refusal: \(e.prefix(3))")
            }
            if step % 25 == 0 {
                for (i, (old, records)) in snapshots.enumerated() {
                    let e = SharedStorageTests.listUseErrors(old)
                    #expect(e.isEmpty, "seed \(seed) snapshot \(i) at \(step): \(e.prefix(3))")
                    #expect(Set(old.records()) == records)
                }
                if snapshots.count > 8 { snapshots.removeFirst(snapshots.count - 8) }
            }
        }
        #expect(applied > 20 && refused > 20)
        // Builder, same records; with finish(), and with users apart.
        var builder = DirectoryBuilder(policy: Self.policy)
        for r in accepted { builder.add(r) }
        let built = try builder.finish()
        #expect(SharedStorageTests.listUseErrors(built).isEmpty)
        #expect(Set(built.records()) == Set(dir.records()))
        let rebound = try dir.rebound(to: Self.policy)
        #expect(SharedStorageTests.listUseErrors(rebound).isEmpty)
        // A replace (large batch on an empty directory) over the records so far, padded past 10k.
        var big = accepted
        for u in 0..<10_001 { big.append(.user(.init(id: "pad\(u)", email: nil, emailVerified: false))) }
        let replaced = try Directory(policy: Self.policy).applying(SharedStorageTests.lines(big)).directory
        #expect(SharedStorageTests.listUseErrors(replaced).isEmpty)
        let again = try replaced.applying(SharedStorageTests.lines([.delete(.org("o0")), .delete(.user("u1"))])).directory
        #expect(SharedStorageTests.listUseErrors(again).isEmpty)
        #expect(SharedStorageTests.listUseErrors(replaced).isEmpty)
    }

    /// Builder with records that fail (skipped) and deletes, finishing with users apart.
    @Test(arguments: [11, 12, 13] as [UInt64])
    func builderWithUsersApart(seed: UInt64) throws {
        var g = Gen(rng: SplitMix64(seed: seed))
        var builder = DirectoryBuilder(policy: Self.policy)
        var users = UsersBuilder()
        var all: [Record] = Self.orgs.map { .org(.init(id: $0)) }
        for r in all { builder.add(r) }
        for u in Self.users { users.add(.init(id: u, email: nil, emailVerified: false)); all.append(.user(.init(id: u, email: nil, emailVerified: false))) }
        builder.placeUsers()
        var n = 0
        while n < 150 {
            let r = g.record()
            switch r {
            case .user, .delete(.user): continue
            case .member(let m) where m.org == "nowhere": continue
            default: break
            }
            // keep only records valid against a directory built so far
            let probe = try? Directory.build(SharedStorageTests.lines(all + [r]), policy: Self.policy)
            guard probe != nil else { continue }
            all.append(r)
            builder.add(r)
            n += 1
        }
        let dir = try builder.finish(users: users)
        #expect(SharedStorageTests.listUseErrors(dir).isEmpty)
    }

    /// The table against a model, hashes forced to collide.
    @Test func collidingTableAgainstModel() {
        var rng = SplitMix64(seed: 99)
        var table = NameListTable(shardBits: 1)
        var held: [(NameList, Int)] = []   // identity, uses
        let names = [["a"], ["b"], ["c"], ["d"], ["e"]]
        for step in 0..<4_000 {
            if rng.chance(0.55) || held.isEmpty {
                let n = rng.pick(names)
                let l = table.intern(n, hash: UInt64(40 + rng.below(3)))!
                #expect(l.names == n)
                if let i = held.firstIndex(where: { $0.0 === l }) { held[i].1 += 1 } else { held.append((l, 1)) }
            } else if rng.chance(0.3) {
                let i = rng.below(held.count)
                let ok = table.use(held[i].0); #expect(ok, "step \(step)")
                held[i].1 += 1
            } else {
                let i = rng.below(held.count)
                table.release(held[i].0)
                held[i].1 -= 1
                if held[i].1 == 0 { held.remove(at: i) }
            }
            var inTable: [ObjectIdentifier: Int] = [:]
            table.forEach { l, u in inTable[ObjectIdentifier(l.storage)] = u }
            let model = Dictionary(uniqueKeysWithValues: held.map { (ObjectIdentifier($0.0.storage), $0.1) })
            if inTable != model { Issue.record("step \(step): table \(inTable) model \(model)"); return }
        }
    }
}
