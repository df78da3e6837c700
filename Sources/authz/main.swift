import AuthzPolicy
do { _ = try PolicyLoader.load(path: CommandLine.arguments[1]); print("ok") } catch { print(error) }
