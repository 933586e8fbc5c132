import DevCloud
import Foundation
import Logging
import SnapmountAgent
import SnapmountCore
import SnapmountSystem
import SnapmountTestSupport
import Testing

/// Collects attachment events from DevCloud's hook.
actor EventLog {
    var events: [String] = []
    func add(_ event: AttachmentEvent) {
        switch event {
        case .attached(let volume, _, let device): events.append("attached \(volume.id) \(device)")
        case .detached(let volume, _, let device): events.append("detached \(volume.id) \(device)")
        case .deleted(let id): events.append("deleted \(id)")
        }
    }
}

@Suite("DevCloud hooks, lifecycle and control")
struct DevCloudControlTests {
    @Test("attach, detach and delete, with the hook told of each change")
    func lifecycle() async throws {
        try await withSimulatedHost { host in
            let cloud = host.cloud
            let log = EventLog()
            let plane = host.plane
            await cloud.state.onAttachment { event in
                await plane.handle(event)
                await log.add(event)
            }
            guard case .mounted(let record) = try await host.run().outcome else {
                Issue.record("not mounted")
                return
            }
            let attached = await cloud.state.volumeTable().first?.attachment
            #expect(attached?.device == "/dev/sdf")
            #expect(attached?.deleteOnTermination == true)
            let left = try await withSession(cloud) { session in
                session.volumes.rollBack(try #require(VolumeID(record.volume)))
            }
            #expect(left == nil)
            try await Task.sleep(for: .milliseconds(400))
            #expect(await log.events == ["attached \(record.volume) /dev/sdf", "detached \(record.volume) /dev/sdf", "deleted \(record.volume)"])
            #expect(await cloud.state.volumeTable().isEmpty)
            #expect(host.devices.scan().map(\.name) == ["nvme0n1"])  // the root volume only
        }
    }

    @Test("many instances: each its own identity and role; every call's key names its instance; EC2's filters on attachments")
    func manyInstances() async throws {
        try await withCloud { cloud in
            let other = DevInstance(id: "i-0123456789abcdef1", availabilityZone: cloud.state.settings.availabilityZone,
                                    roleName: "storm-role", privateAddress: "10.0.1.1")
            await cloud.state.addInstance(other)
            let mine = try await withSession(cloud) { session in
                (session.identity.instanceID.text, try session.ec2.describeVolumes().count)
            }
            let theirs = try await withSession(cloud, environment: ["AWS_EC2_METADATA_SERVICE_ENDPOINT": "\(cloud.imdsEndpoint)/\(other.id)"]) { session in
                let request = VolumeRequest(availabilityZone: session.identity.availabilityZone, snapshot: try #require(SnapshotID(releaseSnapshot)),
                                            instance: session.identity.instanceID, settings: VolumeSettings())
                let volume = try session.volumes.waitAvailable(try session.ec2.createVolume(request).id)
                _ = try session.ec2.attachVolume(volume.id, to: session.identity.instanceID, device: "/dev/sdf")
                _ = try session.volumes.waitAttached(volume.id)
                let attached = try session.ec2.describeVolumes(filters: [("attachment.status", ["attached"]), ("attachment.instance-id", [other.id])])
                let detaching = try session.ec2.describeVolumes(filters: [("attachment.status", ["detaching"])])
                return (session.identity.instanceID.text, attached.map(\.id), volume.id, detaching.count)
            }
            #expect(mine.0 == cloud.state.settings.instanceID)
            #expect(theirs.0 == other.id)
            #expect(theirs.1 == [theirs.2])
            #expect(theirs.3 == 0)
            // Two roles, two sets of keys; each EC2 call is told apart by its key.
            let owners = await cloud.state.accessKeyOwners()
            #expect(Set(owners.values) == [cloud.state.settings.instanceID, other.id])
            let calls = await cloud.state.callLog().ec2Calls()
            #expect(calls.filter { owners[$0.accessKeyID ?? ""] == cloud.state.settings.instanceID }.count == 1)
            #expect(calls.filter { owners[$0.accessKeyID ?? ""] == other.id }.count == calls.count - 1)
            let instances = await cloud.state.instanceList().map(\.id)
            #expect(instances == [cloud.state.settings.instanceID, other.id].sorted())
        }
    }

    @Test("rollBack leaves a volume tagged for another instance alone")
    func rollBackOnlyOwn() async throws {
        try await withCloud { cloud in
            try await withSession(cloud) { session in
                let other = try #require(InstanceID("i-0fedcba9876543210"))
                let request = VolumeRequest(availabilityZone: session.identity.availabilityZone, snapshot: try #require(SnapshotID(releaseSnapshot)),
                                            instance: other, settings: VolumeSettings())
                let volume = try session.ec2.createVolume(request)
                _ = try session.volumes.waitAvailable(volume.id)
                #expect(session.volumes.rollBack(volume.id) == nil)
            }
            #expect(await cloud.state.volumeTable().count == 1)
            #expect(await cloud.state.callLog().count("DeleteVolume") == 0)
        }
    }

    @Test("the HTTP control endpoint sets faults and the release, and shows calls and volumes")
    func controlEndpoint() async throws {
        try await withCloud { cloud in
            let control = cloud.controlEndpoint
            let source = cloud.sourceURL
            let (release, calls) = try await onThread {
                let http = try HTTPClient()
                let json = [("Content-Type", "application/json")]
                _ = try http.send(HTTPRequest(.put, "\(control)/release", headers: json,
                                              body: Array(#"{"status":200,"body":"snap-0123456789abcdef1\n","contentType":"text/plain","delayMilliseconds":0}"#.utf8)))
                _ = try http.send(HTTPRequest(.post, "\(control)/faults", headers: json,
                                              body: Array(#"{"target":"release","kind":"http503","trigger":{"nthCall":{"_0":2}}}"#.utf8)))
                let release = try http.send(HTTPRequest(.get, source)).text
                let second = try http.send(HTTPRequest(.get, source)).status
                let calls = try http.send(HTTPRequest(.get, "\(control)/calls")).text
                return (release + " " + String(second), calls)
            }
            #expect(release == "snap-0123456789abcdef1\n 503")
            let log = try parseJSON(Array(calls.utf8))
            guard case .array(let records) = log else {
                Issue.record("calls is not a JSON array: \(calls)")
                return
            }
            #expect(records.map { $0["outcome"]?.string } == ["200", "fault:http503"])
        }
    }
}
