import AuthzCore
import AuthzData
import Foundation
import Yams

/// A policy test suite (`*.test.yaml`): a policy, a fixed `now`, membership data, and the
/// decisions it must produce. See README.md, "Policy tests", for the format.
public struct PolicySuite: Sendable {
    /// One expected decision.
    public struct Case: Sendable {
        public var name: String
        public var request: CheckRequest
        public var expect: Expectation
        public var at: Timestamp?
        public var line: Int
    }

    public enum Outcome: String, Sendable { case allow, deny, error }

    public struct Expectation: Sendable, CustomStringConvertible {
        public var outcome: Outcome
        /// A reason code (`missing_permission`) or, for `error`, a request error code.
        public var code: String?
        public var description: String { code.map { "\(outcome.rawValue) (\($0))" } ?? outcome.rawValue }
    }

    /// Records applied on top of the suite's data, then cases decided against the result.
    public struct Scenario: Sendable {
        public var name: String
        public var records: [LocatedRecord]
        public var cases: [Case]
    }

    public var file: String
    public var name: String
    public var policyPath: String
    public var now: Timestamp
    /// The suite's data: the records of `data_file`, then those of `data`, each with its line
    /// in the file it was read from, `recordFiles`.
    public var records: [LocatedRecord]
    public var recordFiles: [String]
    public var scenarios: [Scenario]

    public var caseCount: Int { scenarios.reduce(0) { $0 + $1.cases.count } }
}

/// A case that did not decide as expected, or a suite that could not run.
public struct SuiteFailure: Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int
    /// 0 when only the line is known.
    public var column = 0
    public var caseName: String
    public var message: String
    /// `file:line:column: case: message`; a problem with the whole file (it cannot be read)
    /// has no line (0) and is `file: case: message`.
    public var description: String {
        "\(file)\(line > 0 ? ":\(line)" : "")\(line > 0 && column > 0 ? ":\(column)" : ""): \(caseName): \(message)"
    }
}

public struct SuiteResult: Sendable {
    public var passed = 0
    public var failures: [SuiteFailure] = []
    public var failed: Int { failures.count }
    public init() {}
    public mutating func merge(_ other: SuiteResult) {
        passed += other.passed
        failures += other.failures
    }
}

public enum SuiteRunner {
    /// Every `*.test.yaml` under `paths` (files or directories), sorted.
    public static func discover(_ paths: [String]) -> [String] {
        var out: [String] = []
        for path in paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                out.append(path)   // reported as unreadable when run
                continue
            }
            if !isDir.boolValue {
                out.append(path)
                continue
            }
            let walker = FileManager.default.enumerator(atPath: path)
            while let rel = walker?.nextObject() as? String {
                if rel.hasSuffix(".test.yaml") { out.append((path as NSString).appendingPathComponent(rel)) }
            }
        }
        return out.sorted()
    }

    /// Loads and runs one suite file. Problems with the suite itself are failures too.
    public static func run(file: String) -> SuiteResult {
        var result = SuiteResult()
        let suite: PolicySuite
        do {
            suite = try SuiteLoader.load(path: file)
        } catch {
            result.failures = error.errors.map {
                SuiteFailure(file: $0.file, line: $0.line, column: $0.column, caseName: "(suite)", message: $0.message)
            }
            return result
        }
        let policy: CompiledPolicy
        do {
            policy = try PolicyLoader.load(path: suite.policyPath)
        } catch {
            result.failures = error.errors.map { SuiteFailure(file: $0.file, line: $0.line, caseName: "(policy)", message: $0.message) }
            return result
        }
        var base: Directory
        do {
            // Numbered by position, so that an error names the file and line of its record.
            base = try Directory.build(suite.records.enumerated().map { LocatedRecord(line: $0 + 1, record: $1.record) }, policy: policy)
        } catch {
            result.failures = error.errors.map {
                let at = $0.line - 1
                guard suite.records.indices.contains(at) else {
                    return SuiteFailure(file: file, line: 0, caseName: "(data)", message: $0.detail)
                }
                return SuiteFailure(file: suite.recordFiles[at], line: suite.records[at].line, caseName: "(data)", message: $0.detail)
            }
            return result
        }
        for scenario in suite.scenarios {
            var directory = base
            if !scenario.records.isEmpty {
                do {
                    directory = try base.applying(scenario.records).directory
                } catch {
                    result.failures += error.errors.map {
                        SuiteFailure(file: file, line: $0.line, caseName: "\(scenario.name) (data)", message: $0.detail)
                    }
                    continue
                }
            }
            for c in scenario.cases {
                let got = decide(directory, c.request, now: c.at ?? suite.now)
                if let mismatch = compare(got, c.expect, directory, c.request) {
                    let name = scenario.name.isEmpty ? c.name : "\(scenario.name) / \(c.name)"
                    result.failures.append(SuiteFailure(file: file, line: c.line, caseName: name, message: mismatch))
                } else {
                    result.passed += 1
                }
            }
            _ = base
        }
        return result
    }

    private static func decide(_ d: Directory, _ r: CheckRequest, now: Timestamp) -> Result<Decision, CheckError> {
        Result { () throws(CheckError) in try d.check(r, now: now) }
    }

    private static func compare(_ got: Result<Decision, CheckError>, _ want: PolicySuite.Expectation, _ d: Directory, _ r: CheckRequest) -> String? {
        let (outcome, code, message): (PolicySuite.Outcome, String, String)
        switch got {
        case .success(let decision):
            outcome = decision.allowed ? .allow : .deny
            code = decision.reason.code
            message = d.explain(decision, for: r)
        case .failure(let e):
            outcome = .error
            code = e.code.rawValue
            message = e.message
        }
        if outcome == want.outcome && (want.code == nil || want.code == code) { return nil }
        return "expected \(want), got \(outcome.rawValue) (\(code)): \(message)"
    }
}

/// Parses suite files; reports every problem with its file, line and column.
enum SuiteLoader {
    static func load(path: String) throws(PolicyErrors) -> PolicySuite {
        func fail(_ message: String, line: Int = 1) -> PolicyErrors {
            PolicyErrors([PolicyError(file: path, line: line, column: line == 0 ? 0 : 1, message: message)])
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw fail(FileManager.default.fileExists(atPath: path) ? "cannot read the suite file" : "no such suite file", line: 0)
        }
        guard let text = String(data: data, encoding: .utf8) else { throw fail("the suite file is not UTF-8", line: 0) }
        let (composed, duplicates, placeholders) = try YAMLText.compose(text, file: path)
        guard let root = composed else { throw fail("the suite file is empty") }
        var problems = duplicates
        func problem(_ node: Node?, _ message: String) {
            problems.append(PolicyError(file: path, line: node?.mark?.line ?? 1, column: node?.mark?.column ?? 1, message: message))
        }
        /// A scalar's text; nil, reported, for a list or mapping (nil, silently, when absent).
        func string(_ node: Node?, _ what: String) -> String? {
            guard let node else { return nil }
            guard case .scalar(let s) = node else {
                problem(node, "\(what) must be a string, got \(kind(node))")
                return nil
            }
            return s.string
        }
        /// A list's items; none, reported, for anything else (none, silently, when absent).
        func list(_ node: Node?, _ what: String) -> [Node] {
            guard let node else { return [] }
            guard let seq = node.sequence else {
                problem(node, "\(what) must be a list, got \(kind(node))")
                return []
            }
            return Array(seq)
        }
        /// Whether `node` is a mapping, reporting it if not and each key not in `keys`.
        func mapping(_ node: Node, _ what: String, keys: [String]) -> Bool {
            guard let map = node.mapping else {
                problem(node, "\(what) must be a mapping (\(keys.joined(separator: ", "))), got \(kind(node))")
                return false
            }
            for (k, _) in map where !keys.contains(k.string ?? "") && !placeholders.contains(k.string ?? "") {
                problem(k, "unknown key `\(k.string ?? "")` in \(what) (expected: \(keys.joined(separator: ", ")))")
            }
            return true
        }
        let dir = (path as NSString).deletingLastPathComponent

        let suiteKeys = ["suite", "policy", "now", "data", "data_file", "cases", "grids", "scenarios"]
        guard mapping(root, "a suite", keys: suiteKeys), let top = root.mapping else { throw PolicyErrors(problems) }
        let name = string(top["suite"], "`suite`") ?? (path as NSString).lastPathComponent
        var policyPath = ""
        if let p = string(top["policy"], "`policy`") {
            policyPath = p.hasPrefix("/") ? p : (dir as NSString).appendingPathComponent(p)
        } else if top["policy"] == nil {
            problem(root, "a suite needs `policy` (a path relative to the suite file)")
        }
        var now = Timestamp(seconds: 0)
        if let n = top["now"] {
            if let t = n.string.flatMap(Timestamp.init(rfc3339:)) { now = t } else { problem(n, "`now` must be an RFC 3339 timestamp") }
        } else {
            problem(root, "a suite needs `now` (an RFC 3339 timestamp): decisions depend on time")
        }

        /// The records of `data_file` (lines of that file) and the path they are reported under.
        func dataFile(_ f: Node?) -> (path: String, records: [LocatedRecord])? {
            guard let f else { return nil }
            guard let rel = f.string else {
                problem(f, "`data_file` must be a path")
                return nil
            }
            let full = rel.hasPrefix("/") ? rel : (dir as NSString).appendingPathComponent(rel)
            guard let bytes = FileManager.default.contents(atPath: full) else {
                problem(f, "cannot read data file `\(rel)`")
                return nil
            }
            let decoded = RecordCodec.decodeLines(bytes)
            for e in decoded.errors { problems.append(PolicyError(file: full, line: e.line, column: 0, message: e.detail)) }
            return (full, decoded.records)
        }

        /// Inline records (lines of the suite file).
        func records(_ node: Node?) -> [LocatedRecord] {
            var out: [LocatedRecord] = []
            guard let node else { return out }
            guard let seq = node.sequence else {
                problem(node, "`data` must be a list of records")
                return out
            }
            for item in seq {
                let line = item.mark?.line ?? 0
                do {
                    let json = try JSONSerialization.data(withJSONObject: plain(item), options: [.fragmentsAllowed])
                    let record = try RecordCodec.decode(line: String(decoding: json, as: UTF8.self), number: line)
                    out.append(LocatedRecord(line: line, record: record))
                } catch let e as DataError {
                    problem(item, "record: \(e.detail)")
                } catch {
                    problem(item, "record: \(error)")
                }
            }
            return out
        }

        func expectation(_ node: Node) -> PolicySuite.Expectation? {
            guard let s = node.string else {
                problem(node, "an expectation must be `allow`, `deny` or `error`, optionally with `:code`")
                return nil
            }
            let parts = s.split(separator: ":", maxSplits: 1).map { String($0).trimmingCharacters(in: .whitespaces) }
            guard let outcome = PolicySuite.Outcome(rawValue: parts[0]) else {
                problem(node, "unknown expectation `\(s)`: use `allow`, `deny` or `error`, optionally with `:code`")
                return nil
            }
            let code = parts.count > 1 ? parts[1] : nil
            if let code, !known(code, for: outcome, node) { return nil }
            return .init(outcome: outcome, code: code)
        }

        /// Whether `code` can come with `outcome`: a request error code for `error`, else a
        /// reason to allow or to deny. A code no decision has would make a case that never passes.
        func known(_ code: String, for outcome: PolicySuite.Outcome, _ node: Node) -> Bool {
            if outcome == .error {
                guard CheckError.Code(rawValue: code) == nil else { return true }
                let codes = CheckError.Code.allCases.map(\.rawValue)
                problem(node, "unknown error code `\(code)` (the request error codes: \(codes.joined(separator: ", ")))")
                return false
            }
            let reasons = Reason.allCases.filter { $0.allows == (outcome == .allow) }.map(\.code)
            guard !reasons.contains(code) else { return true }
            let what = Reason(code: code).map { "`\(code)` is a reason to \($0.allows ? "allow" : "deny")" } ?? "unknown reason code `\(code)`"
            problem(node, "\(what) (the reasons to \(outcome.rawValue): \(reasons.joined(separator: ", ")))")
            return false
        }

        func timestamp(_ node: Node?) -> Timestamp? {
            guard let node else { return nil }
            guard let t = node.string.flatMap(Timestamp.init(rfc3339:)) else {
                problem(node, "`at` must be an RFC 3339 timestamp")
                return nil
            }
            return t
        }

        func cases(_ node: Node?, grids: Node?) -> [PolicySuite.Case] {
            var out: [PolicySuite.Case] = []
            let caseKeys = ["name", "subject", "action", "resource", "org", "expect", "reason", "at"]
            for item in list(node, "`cases`") {
                guard mapping(item, "a case", keys: caseKeys) else { continue }
                let missing = ["subject", "action", "resource", "org", "expect"].filter { item[$0] == nil }
                guard missing.isEmpty else {
                    problem(item, "case needs \(missing.map { "`\($0)`" }.joined(separator: ", "))")
                    continue
                }
                let label = string(item["name"], "`name`")
                let fields = ["subject", "action", "resource", "org"].map { string(item[$0], "`\($0)`") }
                let reason = string(item["reason"], "`reason`")
                let at = timestamp(item["at"])
                guard var e = expectation(item["expect"]!) else { continue }
                if let r = reason {
                    guard known(r, for: e.outcome, item["reason"]!) else { continue }
                    e.code = r
                }
                guard case let (subject?, action?, resource?, org?) = (fields[0], fields[1], fields[2], fields[3]) else { continue }
                let req = CheckRequest(subject: subject, action: action, resource: resource, org: org)
                out.append(.init(name: label ?? "\(subject) \(action) \(resource) in \(org)", request: req, expect: e, at: at,
                                 line: item.mark?.line ?? 0))
            }
            let gridKeys = ["name", "resource", "org", "actions", "expect", "at"]
            for grid in list(grids, "`grids`") {
                guard mapping(grid, "a grid", keys: gridKeys) else { continue }
                guard grid["resource"] != nil, grid["org"] != nil, let actionList = grid["actions"], let rowsNode = grid["expect"] else {
                    problem(grid, "a grid needs `resource`, `org`, `actions` (a list) and `expect` (subject: [one expectation per action])")
                    continue
                }
                let gname = string(grid["name"], "`name`") ?? "grid"
                let resource = string(grid["resource"], "`resource`"), org = string(grid["org"], "`org`")
                let at = timestamp(grid["at"])
                let actions = list(actionList, "`actions`").map { string($0, "an action in `actions`") }
                if actionList.sequence?.isEmpty == true { problem(actionList, "`actions` must not be empty") }
                guard let rows = rowsNode.mapping else {
                    problem(rowsNode, "a grid's `expect` must be a mapping (subject: [one expectation per action]), got \(kind(rowsNode))")
                    continue
                }
                for (subjectNode, row) in rows {
                    let subject = string(subjectNode, "a grid subject")
                    let cells = list(row, "a grid row")
                    guard row.sequence != nil else { continue }
                    guard cells.count == actions.count else {
                        let who = subject.map { "`\($0)`" } ?? "the row"
                        problem(row, "\(who) has \(cells.count) expectations for \(actions.count) actions")
                        continue
                    }
                    for (action, cell) in zip(actions, cells) {
                        guard let e = expectation(cell), let subject, let action, let resource, let org else { continue }
                        out.append(.init(
                            name: "\(gname): \(subject) \(action)",
                            request: CheckRequest(subject: subject, action: action, resource: resource, org: org),
                            expect: e, at: at, line: cell.mark?.line ?? 0))
                    }
                }
            }
            return out
        }

        var scenarios = [PolicySuite.Scenario(name: "", records: [], cases: cases(top["cases"], grids: top["grids"]))]
        var empty: [(Node, String)] = []
        for s in list(top["scenarios"], "`scenarios`") {
            guard mapping(s, "a scenario", keys: ["name", "data", "cases", "grids"]) else { continue }
            let scenario = PolicySuite.Scenario(name: string(s["name"], "`name`") ?? "scenario", records: records(s["data"]),
                                                cases: cases(s["cases"], grids: s["grids"]))
            if scenario.cases.isEmpty { empty.append((s, scenario.name)) }
            scenarios.append(scenario)
        }
        let fromFile = dataFile(top["data_file"])
        let inline = records(top["data"])
        // A suite or scenario without cases cannot fail: said once the rest is right (a case
        // with an error is dropped, which would be reported here again).
        if problems.isEmpty {
            if scenarios.allSatisfy(\.cases.isEmpty) {
                problem(root, "the suite has no cases: give it `cases`, `grids` or `scenarios` with cases")
            }
            for (node, name) in empty { problem(node, "scenario `\(name)` has no cases: give it `cases` or `grids`") }
        }
        guard problems.isEmpty else { throw PolicyErrors(problems) }
        return PolicySuite(file: path, name: name, policyPath: policyPath, now: now, records: (fromFile?.records ?? []) + inline,
                           recordFiles: Array(repeating: fromFile?.path ?? path, count: fromFile?.records.count ?? 0)
                               + Array(repeating: path, count: inline.count),
                           scenarios: scenarios)
    }

    /// What a node is, for errors: `a list`, `a mapping`, or the scalar quoted.
    static func kind(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .scalar(let s): return "`\(s.string)`"
        case .alias: return "an alias"
        }
    }

    /// A YAML node as Foundation values for JSON: mappings, lists, strings, bools, numbers, null.
    static func plain(_ node: Node) -> Any {
        switch node {
        case .mapping(let m):
            var out: [String: Any] = [:]
            for (k, v) in m { out[k.string ?? ""] = plain(v) }
            return out
        case .sequence(let s):
            return s.map(plain)
        case .scalar(let s):
            if s.style == .plain {
                switch s.string {
                case "null", "~": return NSNull()
                case "true": return true
                case "false": return false
                default: break
                }
            }
            return s.string
        case .alias:
            return NSNull()
        }
    }
}
