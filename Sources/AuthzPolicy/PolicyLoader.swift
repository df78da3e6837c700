import AuthzCore
import Foundation
import Yams

/// Reads a policy file (YAML), reports every error with its position, and compiles it.
///
///     let policy = try PolicyLoader.load(path: "policies/daytona.yaml")
public enum PolicyLoader {
    /// Loads and compiles the policy file at `path`.
    public static func load(path: String) throws(PolicyErrors) -> CompiledPolicy {
        try compile(yaml: try read(path), file: path)
    }

    /// Compiles policy text; `file` names it in errors.
    public static func compile(yaml: String, file: String) throws(PolicyErrors) -> CompiledPolicy {
        let definition = try self.definition(yaml: yaml, file: file)
        do {
            return try CompiledPolicy(definition)
        } catch {
            // The validator should have caught it; never compile what the core refuses.
            throw PolicyErrors([PolicyError(file: file, line: 1, column: 1, message: error.message)])
        }
    }

    /// Parses and validates policy text into a definition, or throws every error found.
    public static func definition(yaml: String, file: String) throws(PolicyErrors) -> PolicyDefinition {
        // A policy is a few kilobytes (the shipped one, 4.5 KB). The bound keeps what a bad
        // file can cost (every duplicate key below composes the text again) to seconds.
        guard yaml.utf8.count <= maxBytes else { throw tooLarge(yaml.utf8.count, file: file) }
        let (root, duplicates, placeholders) = try YAMLText.compose(yaml, file: file)
        guard let root else {
            throw PolicyErrors([PolicyError(file: file, line: 1, column: 1, message: "the policy file is empty")])
        }
        var validator = PolicyValidator(file: file, ignoredKeys: placeholders)
        let definition = validator.validate(root)
        let errors = duplicates + validator.errors
        guard errors.isEmpty, let definition else { throw PolicyErrors(errors) }
        return definition
    }

    /// The largest policy read, in bytes.
    public static var maxBytes: Int { 256 << 10 }

    private static func tooLarge(_ bytes: Int, file: String) -> PolicyErrors {
        PolicyErrors([PolicyError(file: file, line: 1, column: 1,
                                  message: "the policy is \(bytes) bytes; at most \(maxBytes) are read (a policy is a few kilobytes)")])
    }

    static func read(_ path: String) throws(PolicyErrors) -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PolicyErrors([PolicyError(file: path, line: 0, column: 0, message: "cannot read the policy file")])
        }
        // Before decoding it (`definition` bounds text given as it is).
        guard data.count <= maxBytes else { throw tooLarge(data.count, file: path) }
        guard let text = String(data: data, encoding: .utf8) else {
            // Where: the line and column (in bytes) of the first byte that is not UTF-8.
            let bad = Self.firstInvalidUTF8(data) ?? 0
            let before = data.prefix(bad)
            let line = before.reduce(1) { $0 + ($1 == 0x0A ? 1 : 0) }
            let column = bad - (before.lastIndex(of: 0x0A).map { $0 + 1 } ?? 0) + 1
            throw PolicyErrors([PolicyError(file: path, line: line, column: column, message: "the policy file is not UTF-8 (a byte 0x\(String(data[bad], radix: 16)) here)")])
        }
        return text
    }

    /// The offset of the first byte of `data` that does not belong to valid UTF-8.
    static func firstInvalidUTF8(_ data: Data) -> Int? {
        var decoder = UTF8()
        var it = data.makeIterator()
        var consumed = 0, start = 0
        var iterator = AnyIterator { () -> UInt8? in
            let b = it.next()
            if b != nil { consumed += 1 }
            return b
        }
        while true {
            start = consumed
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return nil
            case .error: return start
            }
        }
    }
}

/// Walks the YAML tree once, collecting every error with its position.
struct PolicyValidator {
    let file: String
    /// Keys renamed from duplicates (already reported): skipped silently.
    let ignoredKeys: Set<String>
    var errors: [PolicyError] = []
    /// Errors reported at most (an aliased anchor can repeat one mistake millions of times).
    static var maxErrors: Int { 100 }
    /// Mapping pairs and list items read, at most, over the whole policy: within every other
    /// bound, an anchor aliased under many actions can still multiply what is read (1,024 types
    /// of 16 actions, each naming a 1,024-item list: 16M items from 15 KB).
    static var maxNodes: Int { 1_000_000 }
    private var nodesLeft = maxNodes

    /// Takes `count` from what may be read; false (said once) when the policy asks for more.
    private mutating func spend(_ count: Int, _ node: Node) -> Bool {
        guard nodesLeft >= 0 else { return false }
        nodesLeft -= count
        guard nodesLeft >= 0 else {
            append(node, "the policy reads as more than \(Self.maxNodes) mapping entries and list items (aliases count each time they are used)")
            return false
        }
        return true
    }

    init(file: String, ignoredKeys: Set<String> = []) {
        self.file = file
        self.ignoredKeys = ignoredKeys
    }

    mutating func error(_ node: Node?, _ message: String) {
        // Past the read budget, what is not read would only make false errors.
        guard errors.count <= Self.maxErrors, nodesLeft >= 0 else { return }
        append(node, errors.count < Self.maxErrors ? message : "more errors follow; the first \(Self.maxErrors) are listed")
    }

    private mutating func append(_ node: Node?, _ message: String) {
        let mark = node?.mark
        errors.append(PolicyError(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, message: message))
    }

    /// The pairs of a mapping, reporting a non-mapping and duplicate or unknown keys.
    mutating func mapping(_ node: Node, _ what: String, allowed: [String]? = nil) -> [(key: String, keyNode: Node, value: Node)] {
        guard let map = node.mapping else {
            error(node, "\(what) must be a mapping")
            return []
        }
        guard spend(map.count, node) else { return [] }
        var seen: Set<String> = []
        var out: [(String, Node, Node)] = []
        for (k, v) in map {
            guard let key = k.scalar?.string else {
                error(k, "\(what): keys must be strings")
                continue
            }
            if ignoredKeys.contains(key) { continue }
            guard seen.insert(key).inserted else {
                error(k, "\(what): duplicate key `\(key)`")
                continue
            }
            if let allowed, !allowed.contains(key) {
                error(k, "\(what): unknown key `\(key)` (expected one of: \(allowed.joined(separator: ", ")))")
                continue
            }
            out.append((key, k, v))
        }
        return out
    }

    mutating func string(_ node: Node, _ what: String) -> String? {
        guard let s = node.scalar?.string else {
            error(node, "\(what) must be a string")
            return nil
        }
        return s
    }

    mutating func strings(_ node: Node, _ what: String) -> [(String, Node)] {
        guard let seq = node.sequence else {
            error(node, "\(what) must be a list")
            return []
        }
        // The lists of a policy are short (permissions, grants, aliases, statuses); an aliased
        // anchor could otherwise be read thousands of times over.
        guard seq.count <= Self.maxListItems else {
            error(node, "\(what) has \(seq.count) items; at most \(Self.maxListItems) are read")
            return []
        }
        guard spend(seq.count, node) else { return [] }
        return seq.compactMap { n in string(n, "\(what) item").map { ($0, n) } }
    }

    mutating func bool(_ node: Node, _ what: String) -> Bool? {
        guard let s = node.scalar?.string else {
            error(node, "\(what) must be true or false")
            return nil
        }
        switch s {
        case "true": return true
        case "false": return false
        default:
            error(node, "\(what) must be true or false, not `\(s)`")
            return nil
        }
    }

    mutating func name(_ s: String, _ node: Node, _ what: String) -> Bool {
        guard Identifier.isValid(s) else {
            error(node, "\(what) `\(s)` is not a valid name (no spaces or control characters)")
            return false
        }
        return true
    }

    /// Resource types, and actions over all of them, supported (the shipped policy has 15 and 60).
    static var maxResourceTypes: Int { 1_024 }
    static var maxListItems: Int { 1_024 }
    static var maxActions: Int { 16_384 }

    mutating func validate(_ root: Node) -> PolicyDefinition? {
        let top = mapping(root, "the policy", allowed: ["policy", "permissions", "roles", "assignments", "invitations", "resources"])
        func section(_ key: String) -> Node? { top.first { $0.key == key }?.value }
        for required in ["permissions", "roles", "assignments", "resources"] where section(required) == nil {
            error(root, "the policy needs a `\(required)` section")
        }
        let policyName = section("policy").flatMap { string($0, "`policy`") } ?? "policy"

        // Permissions.
        var permissions: [String] = []
        if let node = section("permissions") {
            var seen: Set<String> = []
            for (p, n) in strings(node, "`permissions`") where name(p, n, "permission") {
                if seen.insert(p).inserted {
                    permissions.append(p)
                } else {
                    error(n, "duplicate permission `\(p)`")
                }
            }
            if permissions.count > PermissionSet.maxCount {
                error(node, "\(permissions.count) permissions declared; at most \(PermissionSet.maxCount) are supported")
            }
            if node.sequence?.isEmpty == true { error(node, "`permissions` must declare at least one permission") }
        }
        let known = Set(permissions)
        func checkPermission(_ p: String, _ n: Node, _ context: String) -> Bool {
            if known.contains(p) { return true }
            error(n, "\(context) grants undeclared permission `\(p)`")
            return false
        }

        // Roles.
        var ownerRole: String?, memberRole: String?, ownerAll = false
        if let node = section("roles") {
            for (roleName, keyNode, value) in mapping(node, "`roles`") {
                guard name(roleName, keyNode, "role") else { continue }
                let fields = mapping(value, "role `\(roleName)`", allowed: ["kind", "all_permissions"])
                guard let kindNode = fields.first(where: { $0.key == "kind" })?.value else {
                    error(value.mapping != nil ? keyNode : value, "role `\(roleName)` needs `kind: owner` or `kind: member`")
                    continue
                }
                let all = fields.first { $0.key == "all_permissions" }.flatMap { bool($0.value, "`all_permissions`") } ?? false
                switch kindNode.scalar?.string {
                case "owner":
                    if ownerRole != nil { error(kindNode, "a second role of kind `owner`; exactly one is allowed") }
                    ownerRole = roleName
                    ownerAll = all
                case "member":
                    if memberRole != nil { error(kindNode, "a second role of kind `member`; exactly one is allowed") }
                    if all { error(kindNode, "`all_permissions` applies to the owner role only") }
                    memberRole = roleName
                default:
                    error(kindNode, "unknown role kind `\(kindNode.scalar?.string ?? "")` (expected `owner` or `member`)")
                }
            }
            if ownerRole == nil { error(node, "`roles` needs a role of kind `owner`") }
            if memberRole == nil { error(node, "`roles` needs a role of kind `member`") }
        }

        // Assignments.
        var assignments: [PolicyDefinition.Assignment] = []
        var implied: String?
        var assignmentNames: Set<String> = []
        if let node = section("assignments"), let m = node.mapping, m.count > 64 {
            error(node, "\(m.count) assignments declared; at most 64 global assignments are supported")
        } else if let node = section("assignments") {
            for (aName, keyNode, value) in mapping(node, "`assignments`") {
                guard name(aName, keyNode, "assignment") else { continue }
                if !assignmentNames.insert(aName).inserted { error(keyNode, "duplicate assignment name `\(aName)`") }
                let fields = mapping(value, "assignment `\(aName)`", allowed: ["grants", "aliases", "implied"])
                var grants: [String] = []
                if let g = fields.first(where: { $0.key == "grants" })?.value {
                    if g.scalar?.string == "all" {
                        grants = permissions
                    } else {
                        for (p, n) in strings(g, "`grants` of `\(aName)`") where checkPermission(p, n, "assignment `\(aName)`") {
                            if !grants.contains(p) { grants.append(p) }
                        }
                    }
                } else if value.mapping != nil {
                    error(keyNode, "assignment `\(aName)` needs `grants` (a list of permissions, `[]`, or `all`)")
                }
                var aliases: [String] = []
                if let al = fields.first(where: { $0.key == "aliases" })?.value {
                    for (alias, n) in strings(al, "`aliases` of `\(aName)`") where name(alias, n, "alias") {
                        if !assignmentNames.insert(alias).inserted {
                            error(n, "duplicate assignment name `\(alias)`")
                        } else {
                            aliases.append(alias)
                        }
                    }
                }
                if let imp = fields.first(where: { $0.key == "implied" }), bool(imp.value, "`implied`") == true {
                    if implied != nil { error(imp.value, "a second implied assignment; at most one is allowed") }
                    implied = aName
                }
                assignments.append(.init(name: aName, aliases: aliases, permissions: grants))
            }
        }

        // Invitations.
        var statuses = ["pending", "accepted", "declined", "cancelled"]
        if let node = section("invitations") {
            let fields = mapping(node, "`invitations`", allowed: ["statuses"])
            if let s = fields.first(where: { $0.key == "statuses" })?.value {
                let list = strings(s, "`statuses`")
                var seen: Set<String> = []
                for (status, n) in list where name(status, n, "invitation status") && !seen.insert(status).inserted {
                    error(n, "duplicate status `\(status)`")
                }
                if list.isEmpty { error(s, "`statuses` needs at least one status (the first is the open one)") } else { statuses = list.map(\.0) }
            }
        }

        // Resources and actions.
        var types: [PolicyDefinition.ResourceType] = []
        var actionCount = 0
        if let node = section("resources") {
            // Bounded before they are read: an anchor aliased under every type could make
            // millions of actions out of a few kilobytes.
            if let m = node.mapping, m.count > Self.maxResourceTypes {
                error(node, "\(m.count) resource types declared; at most \(Self.maxResourceTypes) are supported")
            } else {
                for (typeName, keyNode, value) in mapping(node, "`resources`") {
                    guard name(typeName, keyNode, "resource type") else { continue }
                    // A resource is `<type>:<id>`, split at its first colon.
                    if typeName.contains(":") {
                        error(keyNode, "resource type `\(typeName)` contains `:`, so no resource could name it (a resource is `<type>:<id>`)")
                        continue
                    }
                    if let m = value.mapping, actionCount + m.count > Self.maxActions {
                        error(keyNode, "resource type `\(typeName)` brings the actions to \(actionCount + m.count); at most \(Self.maxActions) are supported in all")
                        break
                    }
                    var actions: [PolicyDefinition.Action] = []
                    let entries = mapping(value, "resource type `\(typeName)`")
                    if entries.isEmpty, value.mapping != nil { error(keyNode, "resource type `\(typeName)` has no action") }
                    actionCount += entries.count
                    for (actionName, actionKey, spec) in entries {
                        guard name(actionName, actionKey, "action") else { continue }
                        if let a = action(actionName, typeName, spec, known: known) { actions.append(a) }
                    }
                    types.append(.init(name: typeName, actions: actions))
                }
            }
        }
        guard errors.isEmpty, let ownerRole, let memberRole else { return nil }
        return PolicyDefinition(
            name: policyName, permissions: permissions, ownerRole: ownerRole, memberRole: memberRole,
            ownerHasAllPermissions: ownerAll, assignments: assignments, impliedAssignment: implied,
            resourceTypes: types, invitationStatuses: statuses)
    }

    mutating func requirement(_ node: Node, _ context: String, known: Set<String>) -> PolicyDefinition.RequirementName? {
        if let s = node.scalar?.string {
            switch s {
            case "member": return .member
            case "owner": return .owner
            case "invitee": return .invitee
            default:
                guard known.contains(s) else {
                    error(node, "\(context) requires `\(s)`, which is neither `member`, `owner`, `invitee` nor a declared permission")
                    return nil
                }
                return .anyOf([s])
            }
        }
        let fields = mapping(node, "\(context) `require`", allowed: ["any_of"])
        guard let list = fields.first(where: { $0.key == "any_of" })?.value else {
            if node.mapping != nil { error(node, "\(context): `require` as a mapping needs `any_of: [permissions]`") }
            return nil
        }
        var perms: [String] = []
        var ok = true
        for (p, n) in strings(list, "`any_of`") {
            if known.contains(p) { perms.append(p) } else {
                error(n, "\(context) requires undeclared permission `\(p)`")
                ok = false
            }
        }
        if perms.isEmpty && ok { error(list, "\(context): `any_of` needs at least one permission") }
        return ok && !perms.isEmpty ? .anyOf(perms) : nil
    }

    mutating func action(_ actionName: String, _ typeName: String, _ spec: Node, known: Set<String>) -> PolicyDefinition.Action? {
        let context = "action `\(typeName):\(actionName)`"
        if spec.scalar != nil {
            return requirement(spec, context, known: known).map { .init(name: actionName, requirement: $0) }
        }
        let fields = mapping(spec, context, allowed: ["require", "when", "target"])
        if spec.mapping == nil { return nil }
        guard let reqNode = fields.first(where: { $0.key == "require" })?.value else {
            error(spec, "\(context) needs `require`")
            return nil
        }
        let req = requirement(reqNode, context, known: known)
        var conditions: [Condition] = []
        if let when = fields.first(where: { $0.key == "when" })?.value {
            for (c, n) in strings(when, "`when`") {
                guard let condition = Condition(name: c) else {
                    error(n, "unknown condition `\(c)` (the engine implements: \(Condition.allCases.map(\.name).joined(separator: ", ")))")
                    continue
                }
                if conditions.contains(condition) { error(n, "condition `\(c)` listed twice") }
                conditions.append(condition)
            }
        }
        var target = ConditionTarget.resource
        if let t = fields.first(where: { $0.key == "target" })?.value {
            switch t.scalar?.string {
            case "resource": target = .resource
            case "subject":
                target = .subject
                if conditions.contains(.notSelf) { error(t, "\(context): `not_self` with `target: subject` can never hold") }
            default: error(t, "\(context): `target` must be `resource` or `subject`")
            }
        }
        guard let req else { return nil }
        return .init(name: actionName, requirement: req, conditions: conditions, target: target)
    }
}
