import SnapmountCore
import Testing

@Suite("Push: Auto Scaling and EC2 answers, rsync's stats, the table's words")
struct PushModelTests {
    @Test("DescribeAutoScalingGroups as Auto Scaling answers it: groups, instances, lifecycle states, NextToken")
    func groups() throws {
        let body = """
            <DescribeAutoScalingGroupsResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">
              <DescribeAutoScalingGroupsResult>
                <AutoScalingGroups>
                  <member>
                    <AutoScalingGroupARN>arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:x:autoScalingGroupName/web</AutoScalingGroupARN>
                    <AutoScalingGroupName>web</AutoScalingGroupName>
                    <Instances>
                      <member><InstanceId>i-0123456789abcdef1</InstanceId><LifecycleState>InService</LifecycleState><HealthStatus>Healthy</HealthStatus></member>
                      <member><InstanceId>i-0123456789abcdef2</InstanceId><LifecycleState>Pending:Wait</LifecycleState></member>
                    </Instances>
                    <MinSize>1</MinSize>
                  </member>
                  <member><AutoScalingGroupName>empty</AutoScalingGroupName><Instances/></member>
                </AutoScalingGroups>
                <NextToken>page-2</NextToken>
              </DescribeAutoScalingGroupsResult>
              <ResponseMetadata><RequestId>0c6ed51a-1111-2222-3333-444455556666</RequestId></ResponseMetadata>
            </DescribeAutoScalingGroupsResponse>
            """
        let page = try AutoScalingDecoder.groups(Array(body.utf8))
        #expect(page.nextToken == "page-2")
        #expect(page.groups["empty"] == [])
        #expect(page.groups["web"]?.map(\.instance.text) == ["i-0123456789abcdef1", "i-0123456789abcdef2"])
        #expect(page.groups["web"]?.map(\.phase) == [.serving, .launching])
        // Not this action's answer, or an instance id that is not one: unreadable, never guessed.
        #expect(throws: EC2DecodeError.self) { try AutoScalingDecoder.groups(Array("<DescribeVolumesResponse/>".utf8)) }
        #expect(throws: EC2DecodeError.self) {
            try AutoScalingDecoder.groups(Array(body.replacingOccurrences(of: "i-0123456789abcdef2", with: "i-zz").utf8))
        }
    }

    @Test("lifecycle states: launching, serving, leaving")
    func phases() {
        let table: [(String, LifecyclePhase)] = [
            ("Pending", .launching), ("Pending:Wait", .launching), ("Pending:Proceed", .launching), ("InService", .serving),
            ("EnteringStandby", .serving), ("Standby", .serving), ("Quarantined", .serving), ("Terminating", .leaving),
            ("Terminating:Wait", .leaving), ("Terminating:Proceed", .leaving), ("Terminated", .leaving), ("Detaching", .leaving),
            ("Detached", .leaving), ("Warmed:Running", .leaving),
        ]
        for (state, phase) in table { #expect(LifecyclePhase(state) == phase, "\(state)") }
    }

    @Test("DescribeInstances: addresses across reservations, an instance without one yet, nextToken")
    func instances() throws {
        let body = """
            <DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId>
            <reservationSet>
              <item><reservationId>r-1</reservationId><instancesSet>
                <item><instanceId>i-0123456789abcdef1</instanceId><instanceState><code>16</code><name>running</name></instanceState><privateIpAddress>10.0.1.5</privateIpAddress></item>
              </instancesSet></item>
              <item><reservationId>r-2</reservationId><instancesSet>
                <item><instanceId>i-0123456789abcdef2</instanceId><instanceState><code>0</code><name>pending</name></instanceState></item>
              </instancesSet></item>
            </reservationSet><nextToken>t2</nextToken></DescribeInstancesResponse>
            """
        let (instances, token) = try EC2Decoder.instances(Array(body.utf8))
        #expect(token == "t2")
        #expect(instances == [
            EC2Instance(id: InstanceID("i-0123456789abcdef1")!, state: .running, privateAddress: "10.0.1.5"),
            EC2Instance(id: InstanceID("i-0123456789abcdef2")!, state: .pending, privateAddress: nil),
        ])
    }

    @Test("rsync --stats: bytes sent and files, with digit grouping and in the older wording; no stats is nil")
    func rsyncStats() {
        let modern = """
            Number of files: 4 (reg: 2, dir: 2)
            Number of regular files transferred: 1,024
            Total bytes sent: 12,345,678
            Total bytes received: 69
            """
        #expect(RsyncSummary.parse(modern) == RsyncSummary(bytesSent: 12_345_678, filesTransferred: 1024))
        #expect(RsyncSummary.parse("Number of files transferred: 7\nTotal bytes sent: 1.234\n") == RsyncSummary(bytesSent: 1234, filesTransferred: 7))
        #expect(RsyncSummary.parse("rsync: connection unexpectedly closed") == nil)
    }

    @Test("bytes as the table prints them")
    func bytes() {
        let table: [(Int64, String)] = [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (14_249, "14.2 kB"), (3_100_000, "3.1 MB"),
                                        (999_960, "1.0 MB"), (7_000_000_000_000, "7.0 TB")]
        for (value, text) in table { #expect(formatBytes(value) == text, "\(value)") }
    }
}
