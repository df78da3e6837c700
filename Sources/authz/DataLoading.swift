import AuthzCore
import AuthzData
import AuthzHTTP
import AuthzPolicy

/// Loads and compiles the policy file at `path`, reporting every error with its position.
func loadPolicy(path: String) -> Result<CompiledPolicy, PolicyLoadError> {
    do {
        return .success(try PolicyLoader.load(path: path))
    } catch {
        return .failure(PolicyLoadError(errors: error.errors.map(\.description)))
    }
}

/// Loads membership records (JSON Lines) from `path` into a directory bound to `policy`.
func loadData(path: String, policy: CompiledPolicy) throws -> Directory {
    try DataFile.load(path: path, policy: policy)
}
