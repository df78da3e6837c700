import AuthzCore

/// Seeded, realistic membership data for a policy, at any size, in the sync format
/// (`Record`s, in an order that builds a directory), and the facts a query mix needs.
///
/// The shape, per `memberships` requested:
/// - users: about 0.55 per membership, 90% with a verified email;
/// - personal orgs: about 40% of users own one (one membership each);
/// - team orgs: sizes skewed small (70% of 2-8 members, 25% of 9-60, 5% of 61-500), 1-3
///   owners each, 3% suspended (half of them until a date, some already past);
/// - custom roles: 40% of team orgs of 5 or more members define 1-3, of 1-4 permissions;
/// - members: 0-3 assignments, drawn from the policy's global assignments (aliases
///   included, so `images_admin` appears) and the org's custom roles;
/// - api keys: 15% of memberships hold one, of 1-3 permissions; 20% expire in the future,
///   10% have expired;
/// - invitations: 30% of team orgs have 1-2, mostly pending, some to existing users.
///
/// Every id is uuid-like (36 characters). The same seed and policy give the same corpus.
public struct Corpus: Sendable {
    /// The instant the data is generated for: expiries are relative to it. Decide with it.
    public static let now = Timestamp(seconds: 1_780_000_000) // 2026-05-28T20:26:40Z

    public struct Membership: Sendable, Hashable {
        public var org: Int32
        public var user: Int32
        public var owner: Bool
    }

    public struct Key: Sendable, Hashable {
        public var id: String
        /// Index into `memberships`.
        public var membership: Int32
    }

    public struct Invitation: Sendable, Hashable {
        public var id: String
        public var org: Int32
        /// The invited user, when the email is an existing user's; -1 otherwise.
        public var invitee: Int32
    }

    public let seed: UInt64
    /// Every record, in an order that builds a directory: orgs, users, roles, members, api
    /// keys, invitations.
    public internal(set) var records: [Record] = []
    public internal(set) var orgIDs: [String] = []
    public internal(set) var userIDs: [String] = []
    /// Grouped by org: an org's memberships are contiguous (`orgMembers`).
    public internal(set) var memberships: [Membership] = []
    /// For each org, the range of its memberships.
    public internal(set) var orgMembers: [Range<Int32>] = []
    public internal(set) var keys: [Key] = []
    /// For each membership, its key's index in `keys`, or -1.
    public internal(set) var membershipKey: [Int32] = []
    public internal(set) var invitations: [Invitation] = []
    /// For each org, the range of its invitations.
    public internal(set) var orgInvitations: [Range<Int32>] = []
}

extension Corpus {
    /// Generates about `memberships` memberships (exactly that many member records) and
    /// everything around them, for `policy`.
    public init(memberships target: Int, seed: UInt64, policy: CompiledPolicy) {
        self.seed = seed
        var rng = SplitMix64(seed: seed)
        let target = max(1, target)
        let globalNames = policy.assignments.flatMap { [$0.name] + $0.aliases }
        let permissions = policy.permissions
        let owner = policy.ownerRole, member = policy.memberRole
        let pending = policy.invitationStatuses[0]
        let otherStatuses = Array(policy.invitationStatuses.dropFirst())

        // Users.
        let userCount = max(4, target * 55 / 100)
        var users: [Record] = []
        users.reserveCapacity(userCount)
        userIDs.reserveCapacity(userCount)
        var emails: [String?] = []
        for _ in 0..<userCount {
            let id = rng.uuid()
            let email: String? = rng.chance(0.97) ? "\(id.prefix(8))\(id.suffix(4))@example.com" : nil
            userIDs.append(id)
            emails.append(email)
            users.append(.user(.init(id: id, email: email, emailVerified: email != nil && rng.chance(0.93))))
        }

        var orgs: [Record] = []
        var roles: [Record] = []
        var members: [Record] = []
        var apiKeys: [Record] = []
        var invites: [Record] = []
        members.reserveCapacity(target)
        memberships.reserveCapacity(target)
        membershipKey.reserveCapacity(target)

        func expiry(_ rng: inout SplitMix64, expiredShare: Double, futureShare: Double) -> Timestamp? {
            let r = Double(rng.next() >> 11) * 0x1p-53
            if r < expiredShare { return Timestamp(seconds: Corpus.now.seconds - Int64(rng.between(60...90 * 86_400))) }
            if r < expiredShare + futureShare { return Timestamp(seconds: Corpus.now.seconds + Int64(rng.between(3_600...365 * 86_400))) }
            return nil
        }

        func addKey(_ rng: inout SplitMix64, org: String, user: String, membership: Int) {
            let id = rng.uuid()
            var perms: [String] = []
            for _ in 0..<rng.between(1...3) {
                let p = rng.pick(permissions)
                if !perms.contains(p) { perms.append(p) }
            }
            membershipKey[membership] = Int32(keys.count)
            keys.append(Key(id: id, membership: Int32(membership)))
            apiKeys.append(.apiKey(.init(id: id, org: org, user: user, permissions: perms,
                                         expiresAt: expiry(&rng, expiredShare: 0.10, futureShare: 0.20))))
        }

        func addMember(_ rng: inout SplitMix64, orgIndex: Int, user: Int, isOwner: Bool, customRoles: [String]) {
            let org = orgIDs[orgIndex], userID = userIDs[user]
            var assignments: [String] = []
            if !isOwner {
                for _ in 0..<rng.between(0...3) {
                    let name = !customRoles.isEmpty && rng.chance(0.35) ? rng.pick(customRoles) : rng.pick(globalNames)
                    if !assignments.contains(name) { assignments.append(name) }
                }
            }
            let m = memberships.count
            memberships.append(Membership(org: Int32(orgIndex), user: Int32(user), owner: isOwner))
            membershipKey.append(-1)
            members.append(.member(.init(org: org, user: userID, role: isOwner ? owner : member, assignments: assignments)))
            if rng.chance(0.15) { addKey(&rng, org: org, user: userID, membership: m) }
        }

        // Personal orgs: one membership each, at most a quarter of the target.
        let personalCount = min(target / 4, Int(Double(userCount) * 0.4))
        for _ in 0..<personalCount {
            let u = rng.below(userCount)
            let orgIndex = orgIDs.count
            orgIDs.append(rng.uuid())
            orgs.append(.org(.init(id: orgIDs[orgIndex], personal: true)))
            let first = Int32(memberships.count)
            addMember(&rng, orgIndex: orgIndex, user: u, isOwner: true, customRoles: [])
            orgMembers.append(first..<Int32(memberships.count))
            orgInvitations.append(Int32(invitations.count)..<Int32(invitations.count))
        }

        // Team orgs until the target is reached.
        var chosen = Set<Int>()
        while memberships.count < target {
            let remaining = target - memberships.count
            let r = rng.below(100)
            var size = r < 70 ? rng.between(2...8) : r < 95 ? rng.between(9...60) : rng.between(61...500)
            size = min(size, remaining, userCount)
            let orgIndex = orgIDs.count
            let orgID = rng.uuid()
            orgIDs.append(orgID)
            var suspended = false
            var until: Timestamp? = nil
            if rng.chance(0.03) {
                suspended = true
                if rng.chance(0.5) { until = expiry(&rng, expiredShare: 0.3, futureShare: 0.7) }
            }
            orgs.append(.org(.init(id: orgID, personal: false, suspended: suspended, suspendedUntil: until)))

            var customRoles: [String] = []
            if size >= 5 && rng.chance(0.4) {
                for _ in 0..<rng.between(1...3) {
                    let id = rng.uuid()
                    var perms: [String] = []
                    for _ in 0..<rng.between(1...4) {
                        let p = rng.pick(permissions)
                        if !perms.contains(p) { perms.append(p) }
                    }
                    customRoles.append(id)
                    roles.append(.role(.init(org: orgID, id: id, permissions: perms)))
                }
            }

            // Distinct users; the set is only queried, never iterated (its order is per process).
            chosen.removeAll(keepingCapacity: true)
            let owners = min(size, rng.between(1...3))
            let first = Int32(memberships.count)
            for i in 0..<size {
                var u = rng.below(userCount)
                while !chosen.insert(u).inserted { u = rng.below(userCount) }
                addMember(&rng, orgIndex: orgIndex, user: u, isOwner: i < owners, customRoles: customRoles)
            }
            orgMembers.append(first..<Int32(memberships.count))

            let firstInvitation = Int32(invitations.count)
            if rng.chance(0.3) {
                for _ in 0..<rng.between(1...2) {
                    let id = rng.uuid()
                    var invitee: Int32 = -1
                    var email: String
                    if rng.chance(0.5) {
                        let u = rng.below(userCount)
                        if let e = emails[u], !chosen.contains(u) {
                            invitee = Int32(u)
                            email = e
                        } else {
                            email = "\(id.prefix(8))@example.org"
                        }
                    } else {
                        email = "\(id.prefix(8))@example.org"
                    }
                    if rng.chance(0.1) { email = email.uppercased() }
                    var assignments: [String] = []
                    for _ in 0..<rng.between(0...2) {
                        let name = !customRoles.isEmpty && rng.chance(0.3) ? rng.pick(customRoles) : rng.pick(globalNames)
                        if !assignments.contains(name) { assignments.append(name) }
                    }
                    let status = rng.chance(0.75) ? pending : rng.pick(otherStatuses)
                    invitations.append(Invitation(id: id, org: Int32(orgIndex), invitee: invitee))
                    invites.append(.invitation(.init(
                        id: id, org: orgID, email: email, role: rng.chance(0.1) ? owner : member,
                        assignments: assignments, status: status,
                        expiresAt: expiry(&rng, expiredShare: 0.15, futureShare: 0.8))))
                }
            }
            orgInvitations.append(firstInvitation..<Int32(invitations.count))
        }

        records.reserveCapacity(orgs.count + users.count + roles.count + members.count + apiKeys.count + invites.count)
        records += orgs
        records += users
        records += roles
        records += members
        records += apiKeys
        records += invites
    }

    /// The records with line numbers, as `Directory.build` takes them.
    public var located: [LocatedRecord] {
        records.enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }
    }

    /// A batch of `count` upserts valid against the corpus's directory, as a sync would send:
    /// assignment changes of existing members (60%), new api keys of existing members (20%),
    /// and new users joining existing orgs (20%, a user record and a member record each).
    public func updateBatch(count: Int, seed: UInt64, policy: CompiledPolicy) -> [LocatedRecord] {
        var rng = SplitMix64(seed: seed)
        let globalNames = policy.assignments.flatMap { [$0.name] + $0.aliases }
        var batch: [Record] = []
        while batch.count < count {
            let m = memberships[rng.below(memberships.count)]
            let org = orgIDs[Int(m.org)], user = userIDs[Int(m.user)]
            let r = rng.below(100)
            if r < 60 {
                var assignments: [String] = []
                if !m.owner {
                    for _ in 0..<rng.between(0...3) {
                        let n = rng.pick(globalNames)
                        if !assignments.contains(n) { assignments.append(n) }
                    }
                }
                batch.append(.member(.init(org: org, user: user, role: m.owner ? policy.ownerRole : policy.memberRole,
                                           assignments: assignments)))
            } else if r < 80 {
                batch.append(.apiKey(.init(id: rng.uuid(), org: org, user: user, permissions: [rng.pick(policy.permissions)],
                                           expiresAt: Timestamp(seconds: Corpus.now.seconds + 86_400))))
            } else if count - batch.count >= 2 {
                let id = rng.uuid()
                batch.append(.user(.init(id: id, email: "\(id.prefix(8))@example.net", emailVerified: true)))
                batch.append(.member(.init(org: org, user: id, role: policy.memberRole, assignments: [rng.pick(globalNames)])))
            }
        }
        return batch.enumerated().map { LocatedRecord(line: $0 + 1, record: $1) }
    }
}
