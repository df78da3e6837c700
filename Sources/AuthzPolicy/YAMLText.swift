import Foundation
import Yams

/// YAML text composed into nodes, with each error at its line and column.
enum YAMLText {
    /// Composes `yaml`, the root being nil for an empty text. Yams refuses a mapping with a
    /// duplicate key before composing anything. To still report every error in one run, each
    /// duplicate found is returned at its position and renamed to a placeholder (returned too,
    /// for the caller to skip), and the text is composed again. A syntax error, or a
    /// duplicate that cannot be renamed, is thrown with the duplicates found before it.
    static func compose(_ yaml: String, file: String) throws(PolicyErrors)
        -> (root: Node?, duplicates: [PolicyError], placeholders: Set<String>) {
        var text = yaml
        var duplicates: [PolicyError] = []
        var placeholders: Set<String> = []
        var root: Node?
        while true {
            do {
                root = try Yams.compose(yaml: text)
                break
            } catch YamlError.duplicatedKeysInMapping(let keys, let context) {
                let placeholder = "__duplicate_\(placeholders.count)__"
                guard let key = keys.first,
                      let (line, renamed) = renameSecond(key: key, in: text, mapping: context.mark, to: placeholder),
                      duplicates.count < maxDuplicates
                else {
                    duplicates.append(PolicyError(file: file, line: context.mark.line, column: context.mark.column,
                                                  message: "duplicate key `\(keys.first ?? "")` in this mapping"))
                    throw PolicyErrors(duplicates)
                }
                duplicates.append(PolicyError(file: file, line: line, column: context.mark.column, message: "duplicate key `\(key)`"))
                placeholders.insert(placeholder)
                text = renamed
            } catch let error as YamlError {
                throw PolicyErrors(duplicates + [syntaxError(error, file: file)])
            } catch {
                throw PolicyErrors(duplicates + [PolicyError(file: file, line: 1, column: 1, message: "cannot parse YAML: \(error)")])
            }
        }
        return (root, duplicates, placeholders)
    }

    /// Duplicate keys reported one by one (each composes the text again, so a large file
    /// with many would take minutes); past them, the next one ends the run.
    static var maxDuplicates: Int { 20 }

    /// In a block mapping starting at `mark`, renames the second key `key` found at the
    /// mapping's column. Returns its 1-based line and the new text, or nil if not found
    /// (a flow mapping, say). Lines are split where Yams (libyaml) breaks them, so that its
    /// line numbers index them: LF, CRLF, a lone CR, NEL, U+2028 and U+2029 (splitting on LF
    /// alone, a duplicate in a CRLF file trapped).
    private static func renameSecond(key: String, in text: String, mapping mark: Mark, to placeholder: String) -> (Int, String)? {
        var lines: [String] = [], breaks: [String] = []
        var line = ""
        for c in text {
            if c == "\n" || c == "\r\n" || c == "\r" || c == "\u{85}" || c == "\u{2028}" || c == "\u{2029}" {
                lines.append(line)
                breaks.append(String(c))
                line = ""
            } else {
                line.append(c)
            }
        }
        lines.append(line)
        guard mark.line >= 1, mark.line <= lines.count else { return nil }
        let indent = mark.column - 1
        var found = 0
        for i in (mark.line - 1)..<lines.count {
            let line = lines[i]
            let leading = line.prefix { $0 == " " }.count
            let trimmed = line.drop { $0 == " " }
            if i > mark.line - 1, leading < indent, !trimmed.isEmpty, !trimmed.hasPrefix("#") { break }
            guard leading == indent else { continue }
            for candidate in [key, "\"\(key)\"", "'\(key)'"] where trimmed.hasPrefix(candidate + ":") {
                found += 1
                if found == 2 {
                    lines[i] = String(repeating: " ", count: indent) + placeholder + trimmed.dropFirst(candidate.count)
                    var joined = ""
                    for (j, l) in lines.enumerated() {
                        joined += l
                        if j < breaks.count { joined += breaks[j] }
                    }
                    return (i + 1, joined)
                }
            }
        }
        return nil
    }

    private static func syntaxError(_ error: YamlError, file: String) -> PolicyError {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            // The context is where the construct the parser gave up on started (an unclosed `{`).
            let ctx = context.map { " (\($0.text) at \($0.mark.line):\($0.mark.column))" } ?? ""
            return PolicyError(file: file, line: mark.line, column: mark.column, message: "invalid YAML: \(problem)\(ctx)")
        case .reader(let problem, _, _, _):
            return PolicyError(file: file, line: 1, column: 1, message: "invalid YAML: \(problem)")
        default:
            return PolicyError(file: file, line: 1, column: 1, message: "invalid YAML: \(error)")
        }
    }
}
