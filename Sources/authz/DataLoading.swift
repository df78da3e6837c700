import AuthzCore
import AuthzHTTP

// Placeholders for the loaders other branches provide (the YAML policy loader in
// AuthzPolicy, JSON Lines records in AuthzData). `serve` calls only these two functions, so
// wiring the real loaders at merge touches this file alone.

/// Loads and compiles the policy file at `path`, reporting every error.
func loadPolicy(path: String) -> Result<CompiledPolicy, PolicyLoadError> {
    .failure(PolicyLoadError(errors: [
        "\(path): policy files are not yet supported in this build (the YAML loader is not wired in)",
    ]))
}

/// A feature of `serve` this build does not have yet.
struct NotYetSupported: Error, CustomStringConvertible {
    var description: String
}

/// Loads membership records (JSON Lines) from `path` into a directory bound to `policy`.
func loadData(path: String, policy: CompiledPolicy) throws -> Directory {
    throw NotYetSupported(description: "\(path): --data is not yet supported in this build (the JSON Lines loader is not wired in)")
}
