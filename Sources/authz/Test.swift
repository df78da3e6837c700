import ArgumentParser
import AuthzPolicy

struct Test: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run policy test suites (*.test.yaml).",
        discussion: "Prints each failure with its suite file, line and case, then `N passed, N failed`. Exit 1 on any failure."
    )

    @Argument(help: "Suite files or directories to search for *.test.yaml.")
    var paths: [String] = ["policies/"]

    func run() throws {
        let files = SuiteRunner.discover(paths)
        var total = SuiteResult()
        for file in files {
            let result = SuiteRunner.run(file: file)
            for f in result.failures { print("FAIL \(f)") }
            print("\(result.failed == 0 ? "ok  " : "FAIL") \(file): \(result.passed) passed, \(result.failed) failed")
            total.merge(result)
        }
        if files.isEmpty { print("no *.test.yaml suite found under \(paths.joined(separator: " "))") }
        print("\(total.passed) passed, \(total.failed) failed")
        if total.failed > 0 || files.isEmpty { throw ExitCode(1) }
    }
}
