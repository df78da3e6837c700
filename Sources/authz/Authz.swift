import ArgumentParser

@main
struct Authz: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authz",
        abstract: "OrgAuthz: organization authorization decisions from a compiled policy.",
        subcommands: [Compile.self, Check.self, Test.self, Serve.self, Sync.self, Generate.self]
    )
}
