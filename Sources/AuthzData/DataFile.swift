import AuthzCore
import Foundation

/// A membership data file (JSON Lines) read into a directory.
public enum DataFile {
    /// Reads, decodes and applies the records of `path` to an empty directory for `policy`.
    /// Decoding and validation errors are all reported, with the file's line numbers.
    public static func load(path: String, policy: CompiledPolicy) throws(DataErrors) -> Directory {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataErrors([DataError(line: 0, field: nil, message: "cannot read data file `\(path)`")])
        }
        let decoded = RecordCodec.decodeLines(data)
        guard decoded.errors.isEmpty else { throw DataErrors(decoded.errors) }
        return try Directory.build(decoded.records, policy: policy)
    }
}
