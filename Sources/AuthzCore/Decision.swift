/// Why a decision came out the way it did: a stable code for machines (`code`), and with
/// `Directory.explain` a message for people.
public enum Reason: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    // Allowed:
    /// An owner: the requirement was `owner`, or a permission an owner's session holds.
    case owner
    /// The requirement was membership alone.
    case membership
    /// A permission granted by the member's assignments (global or custom).
    case assignment
    /// A permission held by the api key and, currently, by its user.
    case apiKey
    /// The subject is the invitee of the target invitation.
    case invitee

    // Denied:
    case unknownKey
    case keyExpired
    case keyWrongOrg
    case sessionOnly
    case notMember
    case notInvitee
    case ownerRequired
    case missingPermission
    case personalOrg
    case orgSuspended
    case selfUpdate
    case lastOwner
    case notKeyOwner

    public var allows: Bool { rawValue <= Reason.invitee.rawValue }

    /// The stable snake_case code.
    public var code: String { staticCode.description }

    /// The code as a literal, for writers that copy bytes.
    public var staticCode: StaticString {
        switch self {
        case .owner: "owner"
        case .membership: "membership"
        case .assignment: "assignment"
        case .apiKey: "api_key"
        case .invitee: "invitee"
        case .unknownKey: "unknown_key"
        case .keyExpired: "key_expired"
        case .keyWrongOrg: "key_wrong_org"
        case .sessionOnly: "session_only"
        case .notMember: "not_member"
        case .notInvitee: "not_invitee"
        case .ownerRequired: "owner_required"
        case .missingPermission: "missing_permission"
        case .personalOrg: "personal_org"
        case .orgSuspended: "org_suspended"
        case .selfUpdate: "self_update"
        case .lastOwner: "last_owner"
        case .notKeyOwner: "not_key_owner"
        }
    }

    public var description: String { code }

    public init?(code: String) {
        guard let r = Reason.allCases.first(where: { $0.code == code }) else { return nil }
        self = r
    }
}

/// One answer. Small and allocation-free: names are resolved only when explained.
public struct Decision: Sendable, Hashable {
    public let allowed: Bool
    public let reason: Reason
    /// The action decided on.
    public let action: Int32
    /// For `missing_permission` the first permission required; for a permission grant the
    /// permission that granted it; otherwise -1.
    public let permission: Int16
    /// For `assignment` and `api_key` grants: the global assignments of the user that hold
    /// `permission` (bit = assignment index).
    public let grantingAssignments: UInt64

    @inline(__always)
    init(_ reason: Reason, action: Int, permission: Int = -1, granting: UInt64 = 0) {
        self.allowed = reason.allows
        self.reason = reason
        self.action = Int32(action)
        self.permission = Int16(permission)
        self.grantingAssignments = granting
    }
}

/// A request the engine cannot decide on: the caller's mistake, never an allow.
public struct CheckError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, CaseIterable {
        case invalidSubject = "invalid_subject"
        case invalidResource = "invalid_resource"
        case invalidOrg = "invalid_org"
        case invalidAction = "invalid_action"
        case unknownResourceType = "unknown_resource_type"
        case unknownAction = "unknown_action"
    }
    public var code: Code
    /// The request parameter at fault: `subject`, `action`, `resource` or `org`.
    public var parameter: String
    public var message: String
    public var description: String { message }
}

/// The four strings of a check, as a caller sends them.
public struct CheckRequest: Sendable, Hashable, Codable {
    /// `user:<id>` (a session) or `api_key:<id>`.
    public var subject: String
    /// An action of the resource type (`delete`).
    public var action: String
    /// `<type>:<id>` (`sandbox:sb1`, `member:u2`).
    public var resource: String
    /// The organization id.
    public var org: String
    public init(subject: String, action: String, resource: String, org: String) {
        self.subject = subject
        self.action = action
        self.resource = resource
        self.org = org
    }
}
