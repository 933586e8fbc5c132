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
func withSession<T: Sendable>(_ cloud: DevCloud, tuning: CloudTuning = fastTuning(),
                              _ body: @escaping @Sendable (CloudSession) throws -> T) async throws -> T {
    let environment = cloud.environment
    return try await onThread { try body(try CloudSession.connect(environment: environment, logger: quietLogger, tuning: tuning)) }
}

/// What one run of the cloud steps produced.
struct CloudRun: Sendable {
    var volumeID: String
    var created: Bool
    var wall: Duration
}

/// The cloud half of the boot flow, steps 2–6: identity, credentials, snapshot, volume,
/// available, attach, attached, DeleteOnTermination.
func runCloudSteps(_ cloud: DevCloud, tuning: CloudTuning = fastTuning(), clock: RecordingClock = RecordingClock(),
                   logger: Logger = quietLogger,
                   extraEnvironment: [String: String] = [:]) async throws -> CloudRun {
    let environment = cloud.environment.merging(extraEnvironment) { _, new in new }
    let source = try SourceURL(parsing: cloud.sourceURL)
    return try await onThread {
        let started = ContinuousClock.now
        let session = try CloudSession.connect(environment: environment, clock: clock, logger: logger, tuning: tuning)
        let snapshot = try session.resolveSnapshot(source, owner: .selfAccount)
        let request = VolumeRequest(availabilityZone: session.identity.availabilityZone, snapshot: snapshot.id,
                                    instance: session.identity.instanceID, settings: VolumeSettings())
        let (volume, created) = try session.volumes.findOrCreate(request)
        _ = try session.volumes.waitAvailable(volume.id)
        _ = try session.volumes.attach(volume.id, device: "/dev/sdf")
        _ = try session.volumes.waitAttached(volume.id)
        try session.volumes.setDeleteOnTermination(device: "/dev/sdf")
        return CloudRun(volumeID: volume.id.text, created: created, wall: ContinuousClock.now - started)
    }
}

extension [CallRecord] {
    func count(_ action: String) -> Int { filter { $0.action == action }.count }
    func ec2Calls() -> [CallRecord] { filter { $0.service == "ec2" } }
}
