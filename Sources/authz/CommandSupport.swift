import AuthzCore
import Foundation
import AuthzHTTP
import AuthzPolicy
import ArgumentParser

/// Loads and compiles the policy file at `path`, reporting every error with its position.
func loadPolicy(path: String) -> Result<CompiledPolicy, PolicyLoadError> {
    do {
        return .success(try PolicyLoader.load(path: path))
    } catch {
        return .failure(PolicyLoadError(errors: error.errors.map(\.description)))
    }
}


/// Loads the policy for a command, or prints every error (file:line:column) and exits with
/// `status`, after a summary line when `summary` is set.
func loadPolicyOrExit(_ path: String, status: Int32, summary: Bool = false) throws -> CompiledPolicy {
    do {
        return try PolicyLoader.load(path: path)
    } catch {
        printError(error.description)
        if summary { printError("\(error.errors.count) error\(error.errors.count == 1 ? "" : "s") in \(path)") }
        throw ExitCode(status)
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
