import AuthzCore
import Foundation

/// The membership data as plain dictionaries of `Record` values, changed the most obvious way:
/// an upsert replaces the record with the same key, a delete removes it and what hangs off it.
/// No counters, no masks, no sharing: the differential test's model of what the data says.
struct ReferenceData {
    var orgs: [String: Record.Org] = [:]
    var users: [String: Record.User] = [:]
    /// org -> user -> member record.
    var members: [String: [String: Record.Member]] = [:]
    /// org -> role id -> custom role.
    var roles: [String: [String: Record.Role]] = [:]
    var keys: [String: Record.APIKey] = [:]
    var invitations: [String: Record.Invitation] = [:]

    mutating func apply(_ record: Record) {
        switch record {
        case .org(let r): orgs[r.id] = r
        case .user(let r): users[r.id] = r
        case .member(let r): members[r.org, default: [:]][r.user] = r
        case .role(let r): roles[r.org, default: [:]][r.id] = r
        case .apiKey(let r): keys[r.id] = r
        case .invitation(let r): invitations[r.id] = r
        case .delete(.org(let id)):
            // "Deleting an org removes its members, roles, keys and invitations."
            orgs[id] = nil
            members[id] = nil
            roles[id] = nil
            keys = keys.filter { $0.value.org != id }
            invitations = invitations.filter { $0.value.org != id }
        case .delete(.user(let id)):
            // "Deleting a user removes its memberships and keys."
            users[id] = nil
            for org in Array(members.keys) { members[org]![id] = nil }
            keys = keys.filter { $0.value.user != id }
        case .delete(.member(let org, let user)): members[org]?[user] = nil
        case .delete(.role(let org, let id)): roles[org]?[id] = nil
        case .delete(.apiKey(let id)): keys[id] = nil
        case .delete(.invitation(let id)): invitations[id] = nil
        }
    }

    /// Whether the directory must accept `record` in this state, for the record shapes the test
    /// generates (well-formed ids and emails): member, role, key and invitation records name an
    /// existing org; assignments name global assignments (or aliases) or custom roles of that org;
    /// a custom role is not named like a global assignment and has known permissions, at least
    /// one; a custom role still assigned, or still offered by an invitation, cannot be deleted.
    func accepts(_ record: Record, policy: PolicyDefinition) -> Bool {
        let globals = Set(policy.assignments.flatMap { [$0.name] + $0.aliases })
        let known = Set(policy.permissions)
        let roleNames = [policy.ownerRole, policy.memberRole]
        func assignable(_ names: [String], org: String) -> Bool {
            names.allSatisfy { globals.contains($0) || roles[org]?[$0] != nil }
        }
        switch record {
        case .org, .user:
            return true
        case .member(let r):
            return orgs[r.org] != nil && roleNames.contains(r.role) && assignable(r.assignments, org: r.org)
        case .role(let r):
            return orgs[r.org] != nil && !globals.contains(r.id) && !r.permissions.isEmpty
                && r.permissions.allSatisfy(known.contains)
        case .apiKey(let r):
            return orgs[r.org] != nil && r.permissions.allSatisfy(known.contains)
        case .invitation(let r):
            return orgs[r.org] != nil && roleNames.contains(r.role) && assignable(r.assignments, org: r.org)
                && policy.invitationStatuses.contains(r.status)
        case .delete(.role(let org, let id)):
            return !(members[org] ?? [:]).values.contains { $0.assignments.contains(id) }
                && !invitations.values.contains { $0.org == org && $0.assignments.contains(id) }
        case .delete:
            return true
        }
    }

    var memberCount: Int { members.values.reduce(0) { $0 + $1.count } }
    var roleCount: Int { roles.values.reduce(0) { $0 + $1.count } }
}

/// What a check comes to, as strings: comparable across the two evaluators.
enum Outcome: Hashable, CustomStringConvertible {
    case allow(String)
    case deny(String)
    case error(String)

    var code: String {
        switch self {
        case .allow(let c), .deny(let c), .error(let c): c
        }
    }

    var description: String {
        switch self {
        case .allow(let c): "allow(\(c))"
        case .deny(let c): "deny(\(c))"
        case .error(let c): "error(\(c))"
        }
    }
}

/// The decision of issue 2 ("The decision, exactly"), evaluated the slow, obvious way: names,
/// `Set<String>` of permission names, linear scans, read straight off the `PolicyDefinition`.
/// Where the issue leaves the order of failing steps open, it follows the order Check.swift
/// documents (request; api key; membership; requirement; conditions in catalog order).
struct ReferenceEvaluator {
    let policy: PolicyDefinition
    let data: ReferenceData

    /// The conditions that look at the org or the target, in the catalog's order (the order
    /// the issue lists them in); the first that fails gives the reason.
    static let conditionOrder: [(name: String, failure: String)] = [
        ("not_personal", "personal_org"),
        ("not_suspended", "org_suspended"),
        ("not_self", "self_update"),
        ("not_last_owner", "last_owner"),
        ("invitee", "not_invitee"),
        ("own_key_or_owner", "not_key_owner"),
    ]

    /// `a:b` split at the first colon, both sides non-empty.
    static func split(_ s: String) -> (String, String)? {
        guard let colon = s.firstIndex(of: ":") else { return nil }
        let head = String(s[..<colon])
        let tail = String(s[s.index(after: colon)...])
        return head.isEmpty || tail.isEmpty ? nil : (head, tail)
    }

    /// "An invitation of the org whose email equals the user's verified email byte for byte
    /// but for ASCII case."
    static func sameEmail(_ a: String, _ b: String) -> Bool {
        func lower(_ c: UInt8) -> UInt8 { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) ? c + 32 : c }
        return a.utf8.map(lower) == b.utf8.map(lower)
    }

    /// Expired: a set time that is not later than now (equal to now is expired).
    static func passed(_ t: Timestamp?, _ now: Timestamp) -> Bool {
        guard let t else { return false }
        return (t.seconds, t.nanoseconds) <= (now.seconds, now.nanoseconds)
    }

    func permissions(ofAssignment name: String) -> [String]? {
        policy.assignments.first { $0.name == name || $0.aliases.contains(name) }?.permissions
    }

    /// A session's permissions: an owner (when the policy says so) has all; anyone else the
    /// union of the implied assignment and the listed ones, global or custom roles of the org.
    func sessionPermissions(_ m: Record.Member) -> Set<String> {
        if m.role == policy.ownerRole && policy.ownerHasAllPermissions { return Set(policy.permissions) }
        var held = Set<String>()
        if let implied = policy.impliedAssignment { held.formUnion(permissions(ofAssignment: implied) ?? []) }
        for a in m.assignments {
            if let p = permissions(ofAssignment: a) {
                held.formUnion(p)
            } else if let role = data.roles[m.org]?[a] {
                held.formUnion(role.permissions)
            }
        }
        return held
    }

    /// Decides, and adds to `seen` the situations this decision turned on (see `Situation`),
    /// so the test can tell that its generator drives every rule both ways.
    func check(subject: String, action: String, resource: String, org orgID: String, now: Timestamp,
               seen: inout Set<Situation>) -> Outcome {
        // 1. The request.
        guard let (kind, subjectID) = Self.split(subject), kind == "user" || kind == "api_key" else {
            return .error("invalid_subject")
        }
        guard let (typeName, target) = Self.split(resource) else { return .error("invalid_resource") }
        // The issue's step 1 (the type has the action) before the org, which it never names as
        // a request error: an empty org only after the resource and action resolve.
        guard let type = policy.resourceTypes.first(where: { $0.name == typeName }) else {
            return .error("unknown_resource_type")
        }
        guard !action.isEmpty else { return .error("invalid_action") }
        guard let act = type.actions.first(where: { $0.name == action }) else { return .error("unknown_action") }
        guard !orgID.isEmpty else { return .error("invalid_org") }
        let conditions = Set(act.conditions.map(\.name))

        // 2. An api key: session_only denies every key; it exists, is unexpired, is the org's.
        let isKey = kind == "api_key"
        var key: Record.APIKey?
        if isKey {
            if conditions.contains("session_only") { return .deny("session_only") }
            guard let k = data.keys[subjectID] else { return .deny("unknown_key") }
            if Self.passed(k.expiresAt, now) {
                if k.expiresAt == now { seen.insert(.keyExpiringNow) }
                return .deny("key_expired")
            }
            if k.expiresAt != nil { seen.insert(.keyNotYetExpired) }
            guard k.org == orgID else { return .deny("key_wrong_org") }
            key = k
        }
        let user = key?.user ?? subjectID

        // 3. Membership, except for the invitee's actions, which need the org only.
        let isInviteeAction = act.requirement == .invitee
        guard let org = data.orgs[orgID] else { return .deny(isInviteeAction ? "not_invitee" : "not_member") }
        let member = data.members[orgID]?[user]
        if !isInviteeAction && member == nil { return .deny("not_member") }
        let ownerSession = !isKey && member?.role == policy.ownerRole

        // 4 and 5. Effective permissions and the requirement.
        let grant: String
        switch act.requirement {
        case .member:
            grant = "membership"
            if let key, key.permissions.isEmpty { seen.insert(.emptyKeyMembership) }
        case .invitee:
            grant = "invitee"
        case .owner:
            guard member!.role == policy.ownerRole else { return .deny("owner_required") }
            guard !isKey else { return .deny("session_only") }
            grant = "owner"
        case .anyOf(let required):
            let held = sessionPermissions(member!)
            var effective = held
            if let key { effective.formIntersection(key.permissions) }
            guard !effective.isDisjoint(with: required) else {
                if let key, !Set(key.permissions).isDisjoint(with: required) { seen.insert(.keyBeyondItsUser) }
                return .deny("missing_permission")
            }
            if !ownerSession, let m = member {
                let granting = m.assignments.filter { !Set(permissions(ofAssignment: $0) ?? data.roles[orgID]?[$0]?.permissions ?? []).isDisjoint(with: required) }
                if granting.contains(where: { a in policy.assignments.contains { $0.aliases.contains(a) } }) { seen.insert(.grantedByAlias) }
                if granting.contains(where: { permissions(ofAssignment: $0) == nil }) { seen.insert(.grantedByCustomRole) }
            }
            grant = ownerSession && policy.ownerHasAllPermissions ? "owner" : isKey ? "api_key" : "assignment"
        }

        // 6. Conditions.
        let targetUser = act.target == .subject ? user : target
        for (name, failure) in Self.conditionOrder {
            let applies = conditions.contains(name) || (name == "invitee" && isInviteeAction)
            guard applies else { continue }
            let holds: Bool
            switch name {
            case "not_personal":
                holds = !org.personal
            case "not_suspended":
                holds = !org.suspended || Self.passed(org.suspendedUntil, now)
                if org.suspended {
                    seen.insert(org.suspendedUntil == nil ? .suspendedIndefinitely
                                : org.suspendedUntil == now ? .suspensionEndingNow
                                : holds ? .suspensionOver : .suspensionNotOver)
                }
            case "not_self":
                holds = targetUser != user
            case "not_last_owner":
                let owners = (data.members[orgID] ?? [:]).values.filter { $0.role == policy.ownerRole }.map(\.user)
                holds = !(owners == [targetUser])
                if holds { seen.insert(owners.contains(targetUser) ? .ownerAmongOwners : .targetNotAnOwner) }
            case "invitee":
                let inv = data.invitations[target]
                let u = data.users[user]
                let sameEmail = inv.flatMap { inv in u?.email.map { Self.sameEmail($0, inv.email) } } ?? false
                if let inv, inv.org == orgID, inv.status == policy.invitationStatuses.first,
                   !Self.passed(inv.expiresAt, now), let u, u.emailVerified, sameEmail {
                    holds = true
                    if u.email != inv.email { seen.insert(.inviteeEmailInOtherCase) }
                } else {
                    holds = false
                    if let inv, let email = u?.email, !sameEmail, email.caseInsensitiveCompare(inv.email) == .orderedSame {
                        seen.insert(.inviteeEmailInOtherUnicodeCase)
                    }
                    if let inv, sameEmail {
                        if inv.org != orgID { seen.insert(.invitationOfOtherOrg) }
                        else if inv.status != policy.invitationStatuses.first { seen.insert(.invitationClosed) }
                        else if inv.expiresAt == now { seen.insert(.invitationExpiringNow) }
                        else if u?.emailVerified == false { seen.insert(.inviteeUnverified) }
                    }
                }
            case "own_key_or_owner":
                if ownerSession {
                    holds = true
                    if let k = data.keys[target], k.user != user { seen.insert(.ownerOnOthersKey) }
                } else if let k = data.keys[target] {
                    holds = k.org == orgID && k.user == user
                    if holds { seen.insert(.ownKey) }
                } else {
                    holds = false
                }
            default:
                fatalError("condition `\(name)` is not in the catalog")
            }
            seen.insert(Situation(rawValue: "\(name) \(holds ? "holds" : "fails")"))
            if !holds { return .deny(failure) }
        }
        return .allow(grant)
    }
}

/// A situation a decision turned on: every condition holding and failing, and the boundaries
/// and twists the issue calls out. The test asserts its workload produced every one.
struct Situation: RawRepresentable, Hashable, Comparable, CustomStringConvertible {
    var rawValue: String
    var description: String { rawValue }
    static func < (a: Situation, b: Situation) -> Bool { a.rawValue < b.rawValue }

    static let keyExpiringNow = Situation(rawValue: "key expires_at equal to now: expired")
    static let keyNotYetExpired = Situation(rawValue: "key expires_at later than now: valid")
    static let emptyKeyMembership = Situation(rawValue: "key without permissions, membership action")
    static let keyBeyondItsUser = Situation(rawValue: "key holds a permission its user lacks")
    static let grantedByAlias = Situation(rawValue: "permission granted through an alias")
    static let grantedByCustomRole = Situation(rawValue: "permission granted through a custom role")
    static let suspendedIndefinitely = Situation(rawValue: "suspended, suspended_until null")
    static let suspensionEndingNow = Situation(rawValue: "suspended_until equal to now: not suspended")
    static let suspensionOver = Situation(rawValue: "suspended_until before now")
    static let suspensionNotOver = Situation(rawValue: "suspended_until after now")
    static let ownerAmongOwners = Situation(rawValue: "target owner, not the only one")
    static let targetNotAnOwner = Situation(rawValue: "target not an owner: never the last owner")
    static let inviteeEmailInOtherCase = Situation(rawValue: "invitee email in another ASCII case")
    static let inviteeEmailInOtherUnicodeCase = Situation(rawValue: "email the same but for non-ASCII case: not the invitee")
    static let invitationOfOtherOrg = Situation(rawValue: "matching invitation of another org")
    static let invitationClosed = Situation(rawValue: "matching invitation not pending")
    static let invitationExpiringNow = Situation(rawValue: "matching invitation expiring at now")
    static let inviteeUnverified = Situation(rawValue: "matching invitee with unverified email")
    static let ownerOnOthersKey = Situation(rawValue: "owner session on another user's key")
    static let ownKey = Situation(rawValue: "own key")

    static let notable: [Situation] = [
        keyExpiringNow, keyNotYetExpired, emptyKeyMembership, keyBeyondItsUser, grantedByAlias, grantedByCustomRole,
        suspendedIndefinitely, suspensionEndingNow, suspensionOver, suspensionNotOver, ownerAmongOwners,
        targetNotAnOwner, inviteeEmailInOtherCase, inviteeEmailInOtherUnicodeCase, invitationOfOtherOrg, invitationClosed, invitationExpiringNow,
        inviteeUnverified, ownerOnOthersKey, ownKey,
    ]

    /// Every condition that can fail, holding and failing.
    static func bothWays(_ conditions: [String]) -> [Situation] {
        conditions.flatMap { [Situation(rawValue: "\($0) holds"), Situation(rawValue: "\($0) fails")] }
    }
}
