import DevCloud
import Foundation
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// `snapmount rollback`: the previous release published again, checked first; and every
/// instance converging to it, pushed or not (the identity its volume holds decides).
@Suite("snapmount rollback")
struct RollbackTests {
    static func text(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    @Test("snap.txt: the previous id published again, the current one becomes .prev; a second rollback goes forward; a dry run changes nothing")
    func fileRollback() async throws {
        try await PublishTests.releaseServer { host in
            let new = try #require(try await host.publish(freezer: RecordingFreezer()).outcome.publishedID)
            let dry = try await host.rollback(.check)
            #expect(dry.published.text == releaseSnapshot && dry.replaced == new)
            #expect(Self.text(host.publishedFile) == new.text + "\n")

            let back = try await host.rollback()
            #expect(back.published.text == releaseSnapshot && back.replaced == new)
            #expect(back.identity.text == releaseSnapshot, "a snapshot without an identity is its own release")
            #expect(Self.text(host.publishedFile) == releaseSnapshot + "\n")
            #expect(Self.text(host.publishedFile + ".prev") == new.text + "\n")
            let forward = try await host.rollback()
            #expect(forward.published == new)
            #expect(Self.text(host.publishedFile) == new.text + "\n")
        }
    }

    @Test("ssm:/NAME: the value before the current one, from the parameter's history (GetParameterHistory)")
    func ssmRollback() async throws {
        try await PublishTests.releaseServer { host in
            let output = "ssm:/snapmount/web/release"
            await host.cloud.state.setParameter("/snapmount/web/release", releaseSnapshot)
            let new = try #require(try await host.publish(output: output, freezer: RecordingFreezer()).outcome.publishedID)
            let back = try await host.rollback(output: output)
            #expect(back.published.text == releaseSnapshot && back.replaced == new)
            #expect(await host.cloud.state.parameter("/snapmount/web/release") == releaseSnapshot)
            #expect(await host.cloud.state.callLog().contains { $0.action == "GetParameterHistory" && $0.outcome == "ok" })
        }
    }

    @Test("nothing to go back to (no .prev) is 78; a previous snapshot that is gone is 69, and nothing changes")
    func refusals() async throws {
        try await PublishTests.releaseServer { host in
            let none = await #expect(throws: RollbackError.self) { _ = try await host.rollback() }
            #expect(none.map { ExitStatus(for: $0) } == .configuration)
            #expect("\(none.map { "\($0)" } ?? "")".contains("no earlier release"))

            try "snap-0000000000000dead\n".write(toFile: host.publishedFile + ".prev", atomically: true, encoding: .utf8)
            let gone = await #expect(throws: RollbackError.self) { _ = try await host.rollback() }
            #expect(gone.map { ExitStatus(for: $0) } == .unavailable)
            #expect("\(gone.map { "\($0)" } ?? "")".contains("snap-0000000000000dead"))
            #expect(Self.text(host.publishedFile) == releaseSnapshot + "\n")
        }
    }
}
