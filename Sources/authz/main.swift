import ArgumentParser

struct Authz: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "authz",
        abstract: "OrgAuthz: authorization decisions for organizations.",
        subcommands: [Serve.self])
}

Authz.main()
