/// The two kinds of membership an organization knows. Their names in data (`"role":"owner"`)
/// come from the policy.
public enum RoleKind: UInt8, Sendable, CaseIterable {
    /// Full administrative access; an owner's session holds every permission when the policy says so.
    case owner
    /// Access through assignments.
    case member
}

/// The fixed catalog of conditions the engine implements. A policy attaches them to actions
/// by name; the engine knows what each one means.
public enum Condition: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Denies every api_key subject: only a signed-in user's session may do this.
    case sessionOnly
    /// The organization is not a personal one.
    case notPersonal
    /// The organization is not suspended (or its suspension has ended).
    case notSuspended
    /// The target member is not the subject's own user.
    case notSelf
    /// The target is not the only owner of the organization.
    case notLastOwner
    /// The subject's user is the invitee of a pending, unexpired invitation of the organization,
    /// by verified email. Replaces membership for the action that carries it.
    case invitee
    /// The target api key belongs to the organization and to the subject's user, or the subject
    /// is an owner session.
    case ownKeyOrOwner

    /// The name a policy file uses.
    public var name: String {
        switch self {
        case .sessionOnly: "session_only"
        case .notPersonal: "not_personal"
        case .notSuspended: "not_suspended"
        case .notSelf: "not_self"
        case .notLastOwner: "not_last_owner"
        case .invitee: "invitee"
        case .ownKeyOrOwner: "own_key_or_owner"
        }
    }

    public var description: String { name }

    public init?(name: String) {
        guard let c = Condition.allCases.first(where: { $0.name == name }) else { return nil }
        self = c
    }
}

/// A set of conditions as bit flags.
public struct ConditionSet: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public init(_ conditions: [Condition]) {
        rawValue = 0
        for c in conditions { insert(c) }
    }
    @inline(__always) public func contains(_ c: Condition) -> Bool { rawValue & (1 << c.rawValue) != 0 }
    public mutating func insert(_ c: Condition) { rawValue |= 1 << c.rawValue }
    public var conditions: [Condition] { Condition.allCases.filter { contains($0) } }
}

/// What an action requires of the subject, before its conditions.
public enum Requirement: Sendable, Hashable {
    /// Any member of the organization.
    case member
    /// An owner, in a session.
    case owner
    /// No membership: the `invitee` condition stands in for it.
    case invitee
    /// At least one of these permissions in the effective set (one permission is any-of one).
    case anyOf(PermissionSet)
}

/// Which member the member-targeting conditions (`not_self`, `not_last_owner`) look at.
public enum ConditionTarget: Sendable, Hashable {
    /// The user named by the resource id (`member:u2`).
    case resource
    /// The subject's own user (leaving an organization).
    case subject
}
