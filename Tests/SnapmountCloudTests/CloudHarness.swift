import DevCloud
import Foundation
import Logging
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport

let releaseSnapshot = "snap-0123456789abcdef0"

/// DevCloud with short state delays and hangs, for fault tests.
func fastSettings() -> DevCloudSettings {
    var settings = DevCloudSettings()
    settings.delays.volumeCreate = .milliseconds(150)
    settings.delays.attach = .milliseconds(150)
    settings.delays.detach = .milliseconds(100)
    settings.delays.delete = .milliseconds(100)
    settings.hangDuration = .seconds(3)
    return settings
}

/// Agent settings scaled to the fast cloud: three attempts, short backoff, one-second timeouts.
func fastTuning(attempts: Int = 3) -> CloudTuning {
    var tuning = CloudTuning()
    tuning.retry = RetryPolicy(maxAttempts: attempts, baseDelay: .milliseconds(20), maxBackoff: .milliseconds(200))
    tuning.ec2Timeout = .seconds(1)
    tuning.sourceTimeout = .seconds(1)
    tuning.imdsRetry = RetryPolicy(maxAttempts: attempts, baseDelay: .milliseconds(20), maxBackoff: .milliseconds(200))
    tuning.imdsTimeout = .seconds(1)
    return tuning
}

/// A started DevCloud with the release snapshot published, stopped when the body ends.
func withCloud<T: Sendable>(_ settings: DevCloudSettings = fastSettings(),
                            _ body: @escaping @Sendable (DevCloud) async throws -> T) async throws -> T {
    let cloud = try await DevCloud.start(settings)
    await cloud.state.addSnapshot(DevSnapshot(id: releaseSnapshot, sizeGiB: 1))
    await cloud.state.setRelease(ReleaseResponse(body: releaseSnapshot + "\n"))
    do {
        let result = try await body(cloud)
        await cloud.stop()
        return result
    } catch {
        await cloud.stop()
        throw error
    }
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
                   logger: Logger = Logger(label: "quiet") { _ in SwiftLogNoOpLogHandler() },
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
