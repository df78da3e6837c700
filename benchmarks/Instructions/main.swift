// Instructions per operation of the in-process suites, counted by callgrind: this VM has no
// hardware counters for package-benchmark's `instructions` metric, and callgrind's count
// repeats to within 0.1% from run to run where wall clock moves by 2x. Runs the operations
// of `Operations` (the same code the package-benchmark suites time) at one corpus size; each
// is warmed up, then run `count` times with instrumentation on, and its counts dumped under
// "<benchmark>|<size>|<count>" for benchmarks/instructions.py to divide.
//
//   swift build -c release --product InstructionCounts
//   cp .build/release/InstructionCounts /tmp/ic && strip --strip-debug /tmp/ic  # valgrind 3.19 and Swift 6.3's DWARF
//   valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/ic.out.%p /tmp/ic 100k
//   benchmarks/instructions.py /tmp/ic.out.*
import AuthzCore
import BenchmarkSuite
import CCallgrind
import Foundation

@inline(never)
func keep<T>(_ value: T) { withExtendedLifetime(value) {} }

/// Runs `body` once to warm up, then `count` times counted, and dumps the counts.
func measure(_ name: String, _ size: String, count: Int, _ body: () -> Void) {
    body()
    authz_callgrind_start()
    authz_callgrind_zero()
    for _ in 0..<count { body() }
    authz_callgrind_dump("\(name)|\(size)|\(count)")
    authz_callgrind_stop()
}

let args = CommandLine.arguments
guard args.count == 2, let memberships = sizes.first(where: { $0.label == args[1] })?.memberships else {
    FileHandle.standardError.write(Data("usage: InstructionCounts 1k|100k|1M|policy (under callgrind)\n".utf8))
    exit(2)
}
let size = args[1]
if authz_on_valgrind() == 0 {
    FileHandle.standardError.write(Data("InstructionCounts: not under valgrind; nothing is counted\n".utf8))
}

// The check suites cycle through 16,384 queries: count 4,096 of them (a quarter, the same
// mix), so that the figure is an average, not one query's.
let f = Fixture(memberships: memberships)
measure("check", size, count: 1) { keep(Operations.check(f, 4_096)) }
measure("check bytes", size, count: 1) { keep(Operations.checkBytes(f, 4_096)) }
measure("batch100", size, count: 40) { keep(Operations.batch100(f)) }
let batch = Operations.apply100Batch(f)
measure("apply100", size, count: 5) { keep(Operations.apply(f, batch)) }
let p = PermissionsFixture(memberships: memberships)
measure("permissions", size, count: 100) { keep(Operations.permissions(p)) }
// One build (after a warm-up build): at 1M, one takes a few minutes under callgrind.
measure("directory build", size, count: 1) { keep(Operations.directoryBuild(f)) }
if size == "1k" {
    let yaml = try String(contentsOfFile: policyPath, encoding: .utf8)
    let definition = loadPolicy().definition
    measure("policy compile yaml", "", count: 10) { keep(Operations.compileYAML(yaml)) }
    measure("policy compile definition", "", count: 10) { keep(Operations.compileDefinition(definition)) }
}
