/// One problem in a policy file, where it is.
public struct PolicyError: Error, Sendable, Hashable, Comparable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    /// `file:line:column: error: message`, as compilers print it.
    public var description: String { "\(file):\(line):\(column): error: \(message)" }

    public static func < (a: PolicyError, b: PolicyError) -> Bool {
        (a.file, a.line, a.column, a.message) < (b.file, b.line, b.column, b.message)
    }
}

/// Every problem found in one run, sorted by position. A policy with any never compiles.
public struct PolicyErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [PolicyError]
    public init(_ errors: [PolicyError]) { self.errors = errors.sorted() }
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
