/// A policy as plain names, before compilation: what a policy file says, with positions
/// stripped. `AuthzPolicy` produces it from YAML after reporting every error with its
/// position; `CompiledPolicy.init` checks it again and never produces a policy that
/// could answer from an inconsistent definition.
public struct PolicyDefinition: Sendable, Equatable {
    public struct Assignment: Sendable, Equatable {
        public var name: String
        public var aliases: [String]
        public var permissions: [String]
        public init(name: String, aliases: [String] = [], permissions: [String]) {
            self.name = name
            self.aliases = aliases
            self.permissions = permissions
        }
    }

    public enum RequirementName: Sendable, Equatable {
        case member, owner, invitee
        case anyOf([String])
    }

    public struct Action: Sendable, Equatable {
        public var name: String
        public var requirement: RequirementName
        public var conditions: [Condition]
        public var target: ConditionTarget
        public init(name: String, requirement: RequirementName, conditions: [Condition] = [], target: ConditionTarget = .resource) {
            self.name = name
            self.requirement = requirement
            self.conditions = conditions
            self.target = target
        }
    }

    public struct ResourceType: Sendable, Equatable {
        public var name: String
        public var actions: [Action]
        public init(name: String, actions: [Action]) {
            self.name = name
            self.actions = actions
        }
    }

    public var name: String
    public var permissions: [String]
    public var ownerRole: String
    public var memberRole: String
    /// Whether an owner's session holds every permission.
    public var ownerHasAllPermissions: Bool
    public var assignments: [Assignment]
    /// The assignment every member has without it being listed.
    public var impliedAssignment: String?
    public var resourceTypes: [ResourceType]
    /// Invitation statuses; the first is the one in which an invitation is still open.
    public var invitationStatuses: [String]

    public init(
        name: String, permissions: [String], ownerRole: String = "owner", memberRole: String = "member",
        ownerHasAllPermissions: Bool = true, assignments: [Assignment], impliedAssignment: String? = nil,
        resourceTypes: [ResourceType],
        invitationStatuses: [String] = ["pending", "accepted", "declined", "cancelled"]
    ) {
        self.name = name
        self.permissions = permissions
        self.ownerRole = ownerRole
        self.memberRole = memberRole
        self.ownerHasAllPermissions = ownerHasAllPermissions
        self.assignments = assignments
        self.impliedAssignment = impliedAssignment
        self.resourceTypes = resourceTypes
        self.invitationStatuses = invitationStatuses
    }
}

/// A definition that cannot compile: the first inconsistency found. Policy files get every
/// error with its position from `AuthzPolicy`; this is the core's own guard.
public struct PolicyDefinitionError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// One action of one resource type, compiled: a dense id, and its requirement as bit masks.
public struct CompiledAction: Sendable, Hashable {
    public let id: Int
    public let resourceType: Int
    public let name: String
    public let requirement: Requirement
    public let conditions: ConditionSet
    public let target: ConditionTarget
}

/// What the decision reads of an action, without its name: a trivial value, so reading it
/// from `CompiledPolicy.rules` copies no string and makes no retain.
struct ActionRule: Sendable {
    let requirement: Requirement
    let conditions: ConditionSet
    let target: ConditionTarget
}

/// A global assignment, compiled.
public struct CompiledAssignment: Sendable, Hashable {
    public let index: Int
    public let name: String
    public let aliases: [String]
    public let permissions: PermissionSet
}

/// The permission matrix: every name resolved to an index, every action to a requirement
/// mask, every assignment to a permission bitset. Immutable and `Sendable`; a policy reload
/// builds a new one.
public struct CompiledPolicy: Sendable {
    public let name: String
    public let permissions: [String]
    public let assignments: [CompiledAssignment]
    public let impliedAssignment: Int?
    public let ownerRole: String
    public let memberRole: String
    public let ownerHasAllPermissions: Bool
    public let resourceTypes: [String]
    /// Every action, indexed by its id.
    public let actions: [CompiledAction]
    public let invitationStatuses: [String]
    /// Every permission the policy declares.
    public let allPermissions: PermissionSet
    /// The definition this was compiled from.
    public let definition: PolicyDefinition

    private let permissionIndex: [String: Int]
    private let assignmentIndex: [String: Int]   // names and aliases
    /// The same two indexes by bytes, for the directory build (a record names permissions
    /// and assignments; `String` hashing was 8% of a build).
    private let permissionBytes: ByteMap<Int32>
    private let assignmentBytes: ByteMap<Int32>
    private let typeIndex: ByteMap<Int32>         // "type" -> index
    /// For each permission, the global assignments that grant it (bitmask over assignments).
    let assignmentsGranting: [UInt64]
    /// The actions by type and name, with their rules as the decision reads them (by id).
    let actionTable: ActionTable

    public init(_ d: PolicyDefinition) throws(PolicyDefinitionError) {
        func fail(_ m: String) -> PolicyDefinitionError { PolicyDefinitionError(message: m) }
        guard !d.permissions.isEmpty else { throw fail("the policy declares no permission") }
        guard d.permissions.count <= PermissionSet.maxCount else {
            throw fail("the policy declares \(d.permissions.count) permissions; at most \(PermissionSet.maxCount) are supported")
        }
        var permIndex: [String: Int] = [:]
        for (i, p) in d.permissions.enumerated() {
            guard Identifier.isValid(p) else { throw fail("invalid permission name `\(p)`") }
            guard permIndex.updateValue(i, forKey: p) == nil else { throw fail("duplicate permission `\(p)`") }
        }
        func mask(_ names: [String], _ context: String) throws(PolicyDefinitionError) -> PermissionSet {
            var set = PermissionSet()
            for n in names {
                guard let i = permIndex[n] else { throw fail("\(context): unknown permission `\(n)`") }
                set.insertIndex(i)
            }
            return set
        }
        guard d.assignments.count <= 64 else { throw fail("at most 64 global assignments are supported") }
        var assignIndex: [String: Int] = [:]
        var assignments: [CompiledAssignment] = []
        for (i, a) in d.assignments.enumerated() {
            for n in [a.name] + a.aliases {
                guard Identifier.isValid(n) else { throw fail("invalid assignment name `\(n)`") }
                guard assignIndex.updateValue(i, forKey: n) == nil else { throw fail("duplicate assignment name `\(n)`") }
            }
            assignments.append(CompiledAssignment(
                index: i, name: a.name, aliases: a.aliases,
                permissions: try mask(a.permissions, "assignment `\(a.name)`")))
        }
        var implied: Int? = nil
        if let name = d.impliedAssignment {
            guard let i = assignIndex[name] else { throw fail("implied assignment `\(name)` is not declared") }
            implied = i
        }
        guard Identifier.isValid(d.ownerRole), Identifier.isValid(d.memberRole), d.ownerRole != d.memberRole else {
            throw fail("the owner and member roles need two distinct valid names")
        }
        guard !d.invitationStatuses.isEmpty, Set(d.invitationStatuses).count == d.invitationStatuses.count else {
            throw fail("invitation statuses must be distinct and not empty")
        }
        var actions: [CompiledAction] = []
        var typeIndex = ByteMap<Int32>(shardBits: 0)
        var types: [String] = []
        for (t, rt) in d.resourceTypes.enumerated() {
            guard Identifier.isValid(rt.name) else { throw fail("invalid resource type name `\(rt.name)`") }
            guard typeIndex.upsert(rt.name, Int32(t)) == nil else { throw fail("duplicate resource type `\(rt.name)`") }
            types.append(rt.name)
            var actionNames = Set<String>()
            for a in rt.actions {
                guard Identifier.isValid(a.name) else { throw fail("invalid action name `\(a.name)` in `\(rt.name)`") }
                let requirement: Requirement
                switch a.requirement {
                case .member: requirement = .member
                case .owner: requirement = .owner
                case .invitee: requirement = .invitee
                case .anyOf(let names):
                    guard !names.isEmpty else { throw fail("`\(rt.name):\(a.name)` requires an empty permission list") }
                    requirement = .anyOf(try mask(names, "action `\(rt.name):\(a.name)`"))
                }
                var conditions = ConditionSet(a.conditions)
                if requirement == .invitee { conditions.insert(.invitee) }
                let id = actions.count
                guard actionNames.insert(a.name).inserted else {
                    throw fail("duplicate action `\(a.name)` in `\(rt.name)`")
                }
                actions.append(CompiledAction(
                    id: id, resourceType: t, name: a.name, requirement: requirement,
                    conditions: conditions, target: a.target))
            }
        }
        var granting = Array(repeating: UInt64(0), count: d.permissions.count)
        for a in assignments {
            for p in a.permissions.indices { granting[p] |= 1 << UInt64(a.index) }
        }
        self.name = d.name
        self.permissions = d.permissions
        self.assignments = assignments
        self.impliedAssignment = implied
        self.ownerRole = d.ownerRole
        self.memberRole = d.memberRole
        self.ownerHasAllPermissions = d.ownerHasAllPermissions
        self.resourceTypes = types
        self.actions = actions
        self.invitationStatuses = d.invitationStatuses
        self.allPermissions = PermissionSet(bits: d.permissions.count == 64 ? ~0 : (1 << UInt64(d.permissions.count)) - 1)
        self.definition = d
        self.permissionIndex = permIndex
        self.assignmentIndex = assignIndex
        var permissionBytes = ByteMap<Int32>(shardBits: 0)
        for (name, i) in permIndex { permissionBytes.upsert(name, Int32(i)) }
        var assignmentBytes = ByteMap<Int32>(shardBits: 0)
        for (name, i) in assignIndex { assignmentBytes.upsert(name, Int32(i)) }
        self.permissionBytes = permissionBytes
        self.assignmentBytes = assignmentBytes
        self.typeIndex = typeIndex
        self.assignmentsGranting = granting
        self.actionTable = ActionTable(actions.map { (types[$0.resourceType], $0.name, ActionRule(requirement: $0.requirement, conditions: $0.conditions, target: $0.target)) })
    }

    // MARK: Lookups

    public func permission(named name: String) -> Int? { Self.lookup(name, permissionBytes, permissionIndex) }
    /// A global assignment by name or alias.
    public func assignment(named name: String) -> CompiledAssignment? {
        assignmentID(named: name).map { assignments[$0] }
    }
    /// The index of a global assignment by name or alias (copies nothing out).
    func assignmentID(named name: String) -> Int? { Self.lookup(name, assignmentBytes, assignmentIndex) }

    /// `name` in `index`, found by its bytes; the `String` dictionary (whose `==` also matches
    /// canonically equivalent spellings) is asked only for a non-ASCII name the bytes miss,
    /// so the answer is the dictionary's.
    @inline(__always)
    private static func lookup(_ name: String, _ bytes: ByteMap<Int32>, _ index: [String: Int]) -> Int? {
        let found: Int?? = withBytes(name) { b in
            if let i = bytes.find(b) { return Int(i) }
            return b.contains(where: { $0 >= 0x80 }) ? nil : .some(nil)
        }
        return found ?? index[name]
    }
    public func resourceType(named name: String) -> Int? { withBytes(name) { typeIndex.find($0).map(Int.init) } }
    public func action(type: String, action: String) -> CompiledAction? {
        withBytes(type) { t in withBytes(action) { a in actionID(t, a).map { actions[$0] } } }
    }
    /// The actions of one resource type, in declaration order.
    public func actions(ofType type: Int) -> [CompiledAction] { actions.filter { $0.resourceType == type } }

    @inline(__always)
    func actionID(_ type: UnsafeRawBufferPointer, _ action: UnsafeRawBufferPointer) -> Int? {
        actionTable.find(type, action)
    }
    @inline(__always)
    func typeID(_ type: UnsafeRawBufferPointer) -> Int? { typeIndex.find(type).map(Int.init) }

    /// The permissions a member holds through its role and global assignments (`globalMask`,
    /// bit = assignment index): every one for an owner when the policy says so.
    func basePermissions(role: RoleKind, globalMask mask: UInt64) -> PermissionSet {
        if role == .owner && ownerHasAllPermissions { return allPermissions }
        var base = PermissionSet()
        for a in assignments where mask & (1 << UInt64(a.index)) != 0 { base.formUnion(a.permissions) }
        return base
    }

    /// The role kind a data record's role name means.
    public func roleKind(named name: String) -> RoleKind? {
        name == ownerRole ? .owner : name == memberRole ? .member : nil
    }
    public func roleName(_ kind: RoleKind) -> String { kind == .owner ? ownerRole : memberRole }

    /// Names of the permissions in a set, in declaration order.
    public func names(of set: PermissionSet) -> [String] { set.indices.map { permissions[$0] } }
    /// Names of the global assignments in a bitmask.
    public func assignmentNames(mask: UInt64) -> [String] {
        assignments.filter { mask & (1 << UInt64($0.index)) != 0 }.map(\.name)
    }
}

/// What ids and names may contain: printable, no whitespace or control characters, and not
/// empty. Control characters are reserved (composite keys are joined with one).
public enum Identifier {
    public static func isValid(_ s: String) -> Bool {
        withBytes(s) { b in b.count > 0 && b.count <= 512 && allBytes(b, above: 0x20) }
    }

    /// `s` as an error message quotes input: control characters as `\u{..}` escapes, and
    /// at most 64 characters of it (then `...` and its length), so a 50 MB value or a NUL
    /// does not travel into logs and answers as it is.
    public static func quotable(_ s: String) -> String {
        var out = ""
        var count = 0
        for c in s.unicodeScalars {
            if count == 64 { return out + "...(\(s.utf8.count) bytes)" }
            if c.value < 0x20 || c.value == 0x7F || (0x80..<0xA0).contains(c.value) {
                out += "\\u{\(String(c.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(c)
            }
            count += 1
        }
        return out
    }
}

/// Whether every byte of `b` is greater than `floor` (below 0x80) and not DEL (0x7F), eight
/// bytes at a time (`String.utf8.allSatisfy` took ~50 instructions a byte: 38% of a
/// directory build went to validating ids).
@inline(__always)
func allBytes(_ b: UnsafeRawBufferPointer, above floor: UInt8) -> Bool {
    guard let p = b.baseAddress else { return true }
    let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
    let below = ones &* UInt64(floor &+ 1)   // a byte less than floor + 1
    let n = b.count
    var i = 0
    while i + 8 <= n {
        let x = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        // Exact "some byte < k" (k <= 128) and "some byte == 0x7F" tests (Bit Twiddling Hacks).
        let del = x ^ (ones &* 0x7F)
        if ((x &- below) & ~x & highs) | ((del &- ones) & ~del & highs) != 0 { return false }
        i += 8
    }
    while i < n {
        let c = p.load(fromByteOffset: i, as: UInt8.self)
        if c <= floor || c == 0x7F { return false }
        i += 1
    }
    return true
}
