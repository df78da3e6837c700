import AuthzCore
import AuthzPolicy
import Foundation
import Testing

/// The compiled path (`Directory.check`: bitsets, sharded maps, incremental counters) held
/// against `ReferenceEvaluator` (the rules of issue 2 over plain dictionaries) on seeded random
/// directories and queries, before and after random delete batches applied incrementally.
/// A failure names its seed; `AUTHZ_DIFF_SEED=<n>` adds a seed to the run.
@Suite struct DifferentialTests {
    static let seeds: [UInt64] = [1, 2, 3, 42, 2027, 0xDA7_0A, 0xC0FFEE, 0x5EED_0F_A11]
    static let queriesPerPhase = 1_500
    static let deleteBatches = 3
    /// A fixed instant with a fraction, so "one nanosecond before/after now" exists.
    static let now = Timestamp(seconds: 1_790_000_000, nanoseconds: 250_000_000)

    static let errorCodes: [CheckError.Code] = [
        .invalidSubject, .invalidResource, .invalidOrg, .invalidAction, .unknownResourceType, .unknownAction,
    ]

    static func loadPolicy() throws -> CompiledPolicy {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try PolicyLoader.load(path: root.appendingPathComponent("policies/daytona.yaml").path)
    }

    @Test func compiledPathAgreesWithReference() throws {
        let policy = try Self.loadPolicy()
        let definition = policy.definition
        // The reference knows the whole catalog; a policy using a condition it does not is a test defect.
        let knownConditions = Set(ReferenceEvaluator.conditionOrder.map(\.name) + ["session_only"])
        for type in definition.resourceTypes {
            for action in type.actions {
                for c in action.conditions { try #require(knownConditions.contains(c.name), "reference lacks `\(c.name)`") }
            }
        }

        var seeds = Self.seeds
        if let extra = ProcessInfo.processInfo.environment["AUTHZ_DIFF_SEED"].flatMap({ UInt64($0) }) { seeds.append(extra) }

        var histogram: [String: Int] = [:]
        var seen: Set<Situation> = []
        var queries = 0
        var listings = (all: 0, invitees: 0)
        var batches = (applied: 0, refused: 0)
        for seed in seeds {
            var run = SeedRun(seed: seed, policy: policy, now: Self.now)
            do {
                try run.execute(queriesPerPhase: Self.queriesPerPhase, deleteBatches: Self.deleteBatches)
            } catch {
                Issue.record("seed \(seed): the directory refused the generated records: \(error)")
            }
            queries += run.queries
            listings.all += run.listings
            listings.invitees += run.inviteeListings
            histogram.merge(run.histogram, uniquingKeysWith: +)
            seen.formUnion(run.seen)
            batches.applied += run.batchesApplied
            batches.refused += run.batchesRefused
            for m in run.mismatches.prefix(20) { Issue.record(Comment(rawValue: m)) }
            let disagreements = run.mismatches.count
            #expect(disagreements == 0, "seed \(seed): \(disagreements) disagreement(s) in \(run.queries) queries (first 20 above)")
        }

        #expect(queries >= 10_000)
        // Listings compared, and some of them listed an invitee who is not a member.
        #expect(listings.all >= Self.seeds.count * (Self.deleteBatches + 1) * 8, "\(listings.all) listings")
        #expect(listings.invitees > 0, "no listing of an invitation action named a non-member")
        #expect(batches.applied > 0 && batches.refused > 0, "batches applied \(batches.applied), refused \(batches.refused)")
        // Coverage: the generator must drive every outcome both evaluators can produce.
        let wanted = Reason.allCases.map(\.code) + Self.errorCodes.map(\.rawValue)
        let missing = wanted.filter { histogram[$0, default: 0] == 0 }
        let table = histogram.sorted { $0.key < $1.key }.map { "  \($0.key): \($0.value)" }.joined(separator: "\n")
        #expect(missing.isEmpty, "never produced: \(missing.joined(separator: ", ")) over \(queries) queries; histogram:\n\(table)")
        let situations = Situation.notable + Situation.bothWays(ReferenceEvaluator.conditionOrder.map(\.name))
        let unseen = situations.filter { !seen.contains($0) }
        #expect(unseen.isEmpty, "never exercised: \(unseen.map(\.rawValue).joined(separator: "; ")); seen: \(seen.sorted().map(\.rawValue).joined(separator: "; "))")
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and fully determined by its seed, so a
/// failing seed replays exactly, whatever the standard library's generators do.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 0..<n (n > 0).
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(UInt64(1) << 53) < p }
    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
    mutating func pick<T>(_ items: [T], or fallback: T) -> T { items.isEmpty ? fallback : pick(items) }
    /// Up to `max` distinct items, in random order.
    mutating func some<T>(_ items: [T], max: Int) -> [T] {
        var pool = items
        var out: [T] = []
        for _ in 0..<Swift.min(below(max + 1), pool.count) { out.append(pool.remove(at: below(pool.count))) }
        return out
    }
}

/// One seed: a random directory, queries, then delete batches each followed by queries.
struct SeedRun {
    let seed: UInt64
    let policy: CompiledPolicy
    let definition: PolicyDefinition
    let now: Timestamp
    var rng: SplitMix64

    var model = ReferenceData()
    var directory: Directory
    var phase = "build"

    // Id pools: everything ever generated (deleted ids stay, as unknown ids).
    var orgIDs: [String] = []
    var userIDs: [String] = []
    var keyIDs: [String] = []
    var invitationIDs: [String] = []
    let customRoleIDs = ["ci-bot", "deployer", "reader", "ops"]

    var queries = 0
    var histogram: [String: Int] = [:]
    var seen: Set<Situation> = []
    var listings = 0
    var inviteeListings = 0
    var batchesApplied = 0
    var batchesRefused = 0
    var mismatches: [String] = []

    /// Actions, with the ones carrying conditions (or the invitee requirement) listed thrice.
    let actions: [(type: String, action: PolicyDefinition.Action)]
    let assignmentNames: [String]

    init(seed: UInt64, policy: CompiledPolicy, now: Timestamp) {
        self.seed = seed
        self.policy = policy
        self.definition = policy.definition
        self.now = now
        self.rng = SplitMix64(seed: seed)
        self.directory = Directory(policy: policy)
        var actions: [(String, PolicyDefinition.Action)] = []
        for t in definition.resourceTypes {
            for a in t.actions {
                let interesting = !a.conditions.filter { $0.name != "session_only" }.isEmpty || a.requirement == .invitee
                actions += Array(repeating: (t.name, a), count: interesting ? 3 : 1)
            }
        }
        self.actions = actions
        self.assignmentNames = definition.assignments.flatMap { [$0.name] + $0.aliases }
    }

    mutating func execute(queriesPerPhase: Int, deleteBatches: Int) throws {
        let records = generateDirectory()
        directory = try Directory.build(records.enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }, policy: policy)
        for r in records { model.apply(r) }
        checkCounts()
        runQueries(queriesPerPhase)
        runListings(8)
        for b in 1...deleteBatches {
            phase = "batch \(b)"
            applyBatch()
            checkCounts()
            runQueries(queriesPerPhase)
            runListings(8)
        }
    }

    /// `subjects` (GET /v1/subjects) never disagrees with `check`: for random requests, the
    /// users it lists are exactly the users (of all, members or not: an invitee may accept
    /// without being one) whose check allows, and the listings of invitation actions count.
    mutating func runListings(_ n: Int) {
        var done = 0, tries = 0
        while done < n && tries < n * 20 {
            tries += 1
            var (_, action, resource, org) = query()
            // Half of them on an invitation action, which the plain mix rarely lists.
            if done % 2 == 0, let id = invitationIDs.isEmpty ? nil : rng.pick(invitationIDs), let inv = model.invitations[id] {
                (action, resource, org) = (rng.pick(["accept", "decline"]), "invitation:\(id)", rng.chance(0.8) ? inv.org : org)
            }
            // `subjects` throws exactly when `check` does (a malformed request): then both name the same error.
            let listed = Result { () throws(CheckError) in try directory.subjects(org: org, action: action, resource: resource, now: now) }
            let probe = Result { () throws(CheckError) in try directory.check(subject: "user:probe", action: action, resource: resource, org: org, now: now) }
            switch (listed, probe) {
            case (.failure(let a), .failure(let b)):
                if a.code != b.code { mismatches.append("seed \(seed) \(phase): subjects(\(org), \(action), \(resource)) threw \(a.code), check \(b.code)") }
                continue
            case (.failure(let a), .success):
                mismatches.append("seed \(seed) \(phase): subjects(\(org), \(action), \(resource)) threw \(a.code), check did not")
                continue
            case (.success, .failure(let b)):
                mismatches.append("seed \(seed) \(phase): check threw \(b.code), subjects(\(org), \(action), \(resource)) did not")
                continue
            case (.success(let listed), .success):
                let allowed = userIDs.filter { (try? directory.check(subject: "user:\($0)", action: action, resource: resource, org: org, now: now))?.allowed == true }
                let expected = allowed.map { "user:\($0)" }.sorted()
                if listed != expected {
                    mismatches.append("seed \(seed) \(phase): subjects(\(org), \(action), \(resource)) = \(listed), checks allow \(expected)")
                }
                if allowed.contains(where: { model.members[org]?[$0] == nil }) { inviteeListings += 1 }
            }
            done += 1
            listings += 1
        }
    }

    // MARK: Directory

    mutating func moment() -> Timestamp? {
        switch rng.below(8) {
        case 0, 1: nil
        case 2: now
        case 3: Timestamp(seconds: now.seconds, nanoseconds: now.nanoseconds - 1)
        case 4: Timestamp(seconds: now.seconds, nanoseconds: now.nanoseconds + 1)
        case 5: Timestamp(seconds: now.seconds - Int64(1 + rng.below(90 * 86_400)), nanoseconds: now.nanoseconds)
        default: Timestamp(seconds: now.seconds + Int64(1 + rng.below(90 * 86_400)), nanoseconds: 0)
        }
    }

    /// The same address in a random mix of cases.
    mutating func recase(_ s: String) -> String {
        String(s.map { c -> String in rng.chance(0.5) ? c.uppercased() : c.lowercased() }.joined())
    }

    mutating func randomPermissions(max: Int) -> [String] { rng.some(definition.permissions, max: max) }

    mutating func assignments(org: String, max: Int) -> [String] {
        let custom = model.roles[org].map { Array($0.keys).sorted() } ?? []
        var pool = assignmentNames + custom + custom
        if rng.chance(0.3) { pool.append("images_admin") }
        return rng.some(pool, max: max)
    }

    mutating func orgRecord(_ id: String) -> Record {
        let suspended = rng.chance(0.4)
        return .org(.init(id: id, personal: rng.chance(0.25), suspended: suspended,
                          suspendedUntil: suspended || rng.chance(0.2) ? moment() : nil))
    }

    mutating func userRecord(_ id: String, index: Int) -> Record {
        var email: String?
        if rng.chance(0.85) {
            if index > 0 && rng.chance(0.1), let other = model.users[userIDs[rng.below(index)]]?.email {
                email = recase(other)   // two users whose emails differ only by case
            } else {
                email = recase(rng.chance(0.15) ? "josé.\(index)@exämple.org" : "user\(index)@example.com")
            }
        }
        return .user(.init(id: id, email: email, emailVerified: rng.chance(0.7)))
    }

    mutating func memberRecord(org: String, user: String, owner: Bool) -> Record {
        .member(.init(org: org, user: user, role: owner ? definition.ownerRole : definition.memberRole,
                      assignments: assignments(org: org, max: 3)))
    }

    mutating func keyRecord(_ id: String, org: String) -> Record {
        let members = model.members[org].map { Array($0.keys).sorted() } ?? []
        let user = rng.chance(0.75) ? rng.pick(members, or: rng.pick(userIDs)) : rng.pick(userIDs)
        let permissions = rng.chance(0.15) ? [] : randomPermissions(max: 4)
        return .apiKey(.init(id: id, org: org, user: user, permissions: permissions, expiresAt: moment()))
    }

    mutating func invitationRecord(_ id: String, org: String) -> Record {
        let emails = userIDs.compactMap { model.users[$0]?.email }
        let email = rng.chance(0.75) && !emails.isEmpty ? recase(rng.pick(emails)) : "Stranger.\(id)@Example.net"
        let statuses = definition.invitationStatuses
        let status = rng.chance(0.5) ? statuses[0] : rng.pick(statuses)
        return .invitation(.init(id: id, org: org, email: email,
                                 role: rng.chance(0.2) ? definition.ownerRole : definition.memberRole,
                                 assignments: assignments(org: org, max: 2), status: status, expiresAt: moment()))
    }

    /// The `i`th org or user id: most are UUIDs in canonical lowercase text (members with two
    /// are kept apart, keyed in binary: `MemberIndex`), some UUIDs in uppercase and some plain
    /// names (members with one of those are kept by their bytes). Made from the seed and `i`
    /// alone, so the run's random draws are the same whatever the ids look like.
    static func id(_ prefix: String, _ i: Int, seed: UInt64) -> String {
        var digits = SplitMix64(seed: seed ^ UInt64(i) << 32 ^ (prefix == "org" ? 0x0A : 0x0B))
        let a = digits.next(), b = digits.next()
        var hex = String(a, radix: 16) + String(b, radix: 16)
        hex = String(repeating: "0", count: 32 - hex.count) + hex
        let uuid = [hex.prefix(8), hex.dropFirst(8).prefix(4), hex.dropFirst(12).prefix(4), hex.dropFirst(16).prefix(4), hex.dropFirst(20)]
            .joined(separator: "-")
        switch i % 5 {
        case 3: return uuid.uppercased()
        case 4: return "\(prefix)\(i)"
        default: return uuid
        }
    }

    /// Records in dependency order, then a few upserts that replace earlier ones (last one wins).
    mutating func generateDirectory() -> [Record] {
        var records: [Record] = []
        orgIDs = (0..<(5 + rng.below(4))).map { Self.id("org", $0, seed: seed) }
        for id in orgIDs { add(orgRecord(id), to: &records) }
        userIDs = (0..<(10 + rng.below(8))).map { Self.id("u", $0, seed: seed) }
        for (i, id) in userIDs.enumerated() where rng.chance(0.85) { add(userRecord(id, index: i), to: &records) }
        for org in orgIDs {
            for id in rng.some(customRoleIDs, max: 3) {
                add(.role(.init(org: org, id: id, permissions: randomPermissions(max: 3).nonEmpty(or: definition.permissions[0]))), to: &records)
            }
        }
        for org in orgIDs {
            let people = rng.some(userIDs, max: 7)
            let owners = rng.chance(0.5) ? 2 : 1
            for (i, user) in people.enumerated() { add(memberRecord(org: org, user: user, owner: i < owners), to: &records) }
        }
        for org in orgIDs {
            for _ in 0..<(2 + rng.below(4)) {
                let id = "k\(keyIDs.count)"
                keyIDs.append(id)
                add(keyRecord(id, org: org), to: &records)
            }
            for _ in 0..<(1 + rng.below(4)) {
                let id = "inv\(invitationIDs.count)"
                invitationIDs.append(id)
                add(invitationRecord(id, org: org), to: &records)
            }
        }
        // Replacements: the directory must hold the last version only.
        for _ in 0..<(4 + rng.below(8)) {
            if let r = replacement() { add(r, to: &records) }
        }
        return records
    }

    mutating func add(_ r: Record, to records: inout [Record]) {
        precondition(model.accepts(r, policy: definition), "generated an invalid record \(r)")
        records.append(r)
        model.apply(r)
    }

    /// An upsert of an existing key with new contents, valid in the current state.
    mutating func replacement() -> Record? {
        switch rng.below(6) {
        case 0:
            let org = rng.pick(orgIDs)
            guard let user = model.members[org]?.keys.sorted().first(where: { _ in rng.chance(0.4) }) else { return nil }
            return memberRecord(org: org, user: user, owner: rng.chance(0.4))
        case 1:
            return orgRecord(rng.pick(orgIDs))
        case 2:
            let i = rng.below(userIDs.count)
            return userRecord(userIDs[i], index: i)
        case 3:
            let org = rng.pick(orgIDs)
            guard model.orgs[org] != nil, let id = model.roles[org]?.keys.sorted().first else { return nil }
            return .role(.init(org: org, id: id, permissions: randomPermissions(max: 3).nonEmpty(or: definition.permissions[1])))
        case 4:
            let id = rng.pick(keyIDs)
            guard let k = model.keys[id], model.orgs[k.org] != nil else { return nil }
            return keyRecord(id, org: k.org)
        default:
            let id = rng.pick(invitationIDs)
            guard let i = model.invitations[id], model.orgs[i.org] != nil else { return nil }
            return invitationRecord(id, org: i.org)
        }
    }

    /// A random batch of deletes (with the odd upsert), applied incrementally. Whether the
    /// directory must refuse it (a custom role still assigned) is predicted on a copy of the model.
    mutating func applyBatch() {
        var batch: [Record] = []
        var predicted = model
        var valid = true
        for _ in 0..<(1 + rng.below(5)) {
            let r: Record
            switch rng.below(10) {
            case 0, 1:
                let org = rng.pick(orgIDs)
                let user = rng.chance(0.8) ? rng.pick(predicted.members[org].map { Array($0.keys).sorted() } ?? [], or: userIDs[0]) : "ghost"
                r = .delete(.member(org: org, user: user))
            case 2:
                r = .delete(.user(rng.chance(0.9) ? rng.pick(userIDs) : "ghost"))
            case 3:
                r = .delete(.org(rng.chance(0.9) ? rng.pick(orgIDs) : "nowhere"))
            case 4:
                r = .delete(.apiKey(rng.chance(0.9) ? rng.pick(keyIDs) : "k-none"))
            case 5:
                r = .delete(.invitation(rng.chance(0.9) ? rng.pick(invitationIDs) : "inv-none"))
            case 6:
                // Assigned or not: the directory must refuse exactly the assigned ones.
                let org = rng.pick(orgIDs)
                r = .delete(.role(org: org, id: rng.pick(customRoleIDs)))
            case 7:
                // A demotion, promotion or new assignments for a current member.
                let org = rng.pick(orgIDs)
                guard let user = predicted.members[org]?.keys.sorted().first else { continue }
                let saved = model
                model = predicted
                r = memberRecord(org: org, user: user, owner: rng.chance(0.5))
                model = saved
            case 8:
                // An org coming back (empty) after a delete, or changing its flags.
                let saved = model
                model = predicted
                r = orgRecord(rng.pick(orgIDs))
                model = saved
            default:
                r = .delete(.member(org: rng.pick(orgIDs), user: rng.pick(userIDs)))
            }
            if !predicted.accepts(r, policy: definition) { valid = false }
            predicted.apply(r)
            batch.append(r)
        }
        let located = batch.enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }
        if valid { batchesApplied += 1 } else { batchesRefused += 1 }
        do {
            let next = try directory.applying(located).directory
            if valid {
                directory = next
                model = predicted
            } else {
                mismatches.append("seed \(seed) \(phase): the directory accepted a batch the reference refuses: \(batch)")
            }
        } catch {
            if valid {
                mismatches.append("seed \(seed) \(phase): the directory refused a valid batch \(batch): \(error)")
            }
            // Refused: nothing changes, on either side.
        }
        // Applied or refused, the directory's lists are owned by its table, counted exactly.
        for e in SharedStorageTests.listUseErrors(directory) { mismatches.append("seed \(seed) \(phase): \(e)") }
    }

    mutating func checkCounts() {
        let c = directory.counts
        let expected = (model.orgs.count, model.users.count, model.memberCount, model.roleCount, model.keys.count, model.invitations.count)
        if (c.orgs, c.users, c.members, c.roles, c.apiKeys, c.invitations) != expected {
            mismatches.append("seed \(seed) \(phase): directory counts \(c) but the reference holds \(expected)")
        }
    }

    // MARK: Queries

    mutating func runQueries(_ n: Int) {
        let reference = ReferenceEvaluator(policy: definition, data: model)
        for _ in 0..<n {
            let (subject, action, resource, org) = query()
            let expected = reference.check(subject: subject, action: action, resource: resource, org: org, now: now, seen: &seen)
            let actual: Outcome
            do {
                let d = try directory.check(subject: subject, action: action, resource: resource, org: org, now: now)
                actual = d.allowed ? .allow(d.reason.code) : .deny(d.reason.code)
            } catch {
                actual = .error(error.code.rawValue)
            }
            queries += 1
            histogram[actual.code, default: 0] += 1
            if actual != expected {
                mismatches.append("seed \(seed) \(phase): check(\(subject.debugDescription), \(action.debugDescription), \(resource.debugDescription), \(org.debugDescription)): compiled \(actual), reference \(expected)")
            }
        }
    }

    func membersOf(_ org: String) -> [String] { model.members[org].map { Array($0.keys).sorted() } ?? [] }

    mutating func query() -> (String, String, String, String) {
        // The org: mostly one that exists (or did), some unknown, a few empty.
        let r = rng.below(100)
        let org = r < 85 ? rng.pick(orgIDs) : r < 96 ? "org-x\(rng.below(3))" : ""
        let members = membersOf(org)

        // The subject.
        var subject: String
        var user: String?
        switch rng.below(100) {
        case 0..<55:
            user = rng.pick(members, or: rng.pick(userIDs))
            subject = "user:\(user!)"
        case 55..<65:
            user = rng.pick(userIDs)
            subject = "user:\(user!)"
        case 65..<68:
            subject = "user:ghost\(rng.below(3))"
        case 68..<92:
            let orgKeys = keyIDs.filter { model.keys[$0]?.org == org }
            let k = rng.below(100)
            let id = k < 65 ? rng.pick(orgKeys, or: rng.pick(keyIDs)) : k < 88 ? rng.pick(keyIDs) : "k-unknown\(rng.below(3))"
            user = model.keys[id]?.user
            subject = "api_key:\(id)"
        default:
            subject = rng.pick(["bob", "group:x", "user:", "api_key:", ":u1", "User:u1", "", "service:u1"])
        }

        // The action and resource.
        let m = rng.below(100)
        if m >= 92 {
            let known = rng.pick(definition.resourceTypes)
            switch rng.below(6) {
            case 0: return (subject, "fly", "\(known.name):x1", org)
            case 1: return (subject, "", "\(known.name):x1", org)
            case 2: return (subject, "read", "widget:x1", org)
            case 3: return (subject, rng.pick(known.actions).name, rng.pick(["sandbox", ":x", "sandbox:", "", ":", known.name, "\(known.name):"]), org)
            case 4: return (subject, "", "widget:x1", org)
            default: return (subject, rng.pick(known.actions).name.uppercased(), "\(known.name.uppercased()):x1", org)
            }
        }
        let (type, action) = rng.pick(actions)
        let conditions = Set(action.conditions.map(\.name))
        var target: String
        if action.requirement == .invitee {
            // An invitation, and often a session of a user whose email matches it.
            let orgInvitations = invitationIDs.filter { model.invitations[$0]?.org == org }
            let t = rng.below(100)
            target = t < 70 ? rng.pick(orgInvitations, or: rng.pick(invitationIDs)) : t < 90 ? rng.pick(invitationIDs) : "inv-unknown"
            if rng.chance(0.7), let inv = model.invitations[target] {
                // Unicode case folding, looser than the rule (ASCII case only): the near misses
                // (`JOSÉ` for `josé`) are tried too.
                let matching = userIDs.filter {
                    model.users[$0]?.email.map { $0.caseInsensitiveCompare(inv.email) == .orderedSame } ?? false
                }
                if let u = matching.first(where: { _ in rng.chance(0.7) }) ?? matching.first { subject = "user:\(u)" }
            }
        } else if conditions.contains("own_key_or_owner") {
            let own = keyIDs.filter { model.keys[$0].map { $0.org == org && $0.user == user } ?? false }
            let t = rng.below(100)
            target = t < 50 ? rng.pick(own, or: rng.pick(keyIDs)) : t < 80 ? rng.pick(keyIDs.filter { model.keys[$0]?.org == org }, or: rng.pick(keyIDs)) : t < 95 ? rng.pick(keyIDs) : "k-unknown"
        } else if action.target == .resource && (conditions.contains("not_self") || conditions.contains("not_last_owner")) {
            let owners = members.filter { model.members[org]?[$0]?.role == definition.ownerRole }
            let t = rng.below(100)
            target = t < 35 ? (user ?? rng.pick(userIDs)) : t < 65 ? rng.pick(owners, or: rng.pick(userIDs)) : t < 90 ? rng.pick(members, or: rng.pick(userIDs)) : rng.pick(userIDs)
        } else {
            target = rng.pick(["x1", "sb-7", rng.pick(userIDs), rng.pick(keyIDs), rng.pick(invitationIDs), "a:b"])
        }
        return (subject, action.name, "\(type):\(target)", org)
    }
}

extension Array {
    func nonEmpty(or fallback: Element) -> [Element] { isEmpty ? [fallback] : self }
}
