import DevCloud
import Foundation
import Logging
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport

/// A started DevCloud with the release snapshot published, stopped when the body ends.
func withCloud<T: Sendable>(_ settings: DevCloudSettings = fastSettings(),
                            _ body: @escaping @Sendable (DevCloud) async throws -> T) async throws -> T {
    let cloud = try await DevCloud.start(settings)
    await cloud.state.addSnapshot(DevSnapshot(id: releaseSnapshot, sizeGiB: 1))
    await cloud.state.setRelease(ReleaseResponse(body: releaseSnapshot + "\n"))
    do {
        let result = try await body(cloud)
        await stopCloud(cloud)
        return result
    } catch {
        await stopCloud(cloud)
        throw error
    }
}

/// A fresh agent session against `cloud` — a new "process": nothing carried over but the
/// environment — for a blocking body on its own thread.
func withSession<T: Sendable>(_ cloud: DevCloud, tuning: CloudTuning = fastTuning(), clock: any AgentClock = SystemClock(),
                              environment extra: [String: String] = [:], logger: Logger = quietLogger,
                              _ body: @escaping @Sendable (CloudSession) throws -> T) async throws -> T {
    let environment = try AgentEnvironment(cloud.environment.merging(extra) { _, new in new })
    return try await onThread {
        try body(try CloudSession.connect(environment: environment, clock: clock, logger: logger, tuning: tuning))
    }
}

extension [CallRecord] {
    func count(_ action: String) -> Int { filter { $0.action == action }.count }
    func ec2Calls() -> [CallRecord] { filter { $0.service == "ec2" } }
}
