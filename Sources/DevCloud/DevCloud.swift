import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import SnapmountCore

/// The local cloud: IMDSv2, an EC2 Query endpoint, a release server and a control endpoint,
/// each on 127.0.0.1 and an ephemeral port. Start one per test (or one for the demo).
public final class DevCloud: Sendable {
    public let state: CloudState
    public let imdsEndpoint: String
    public let ec2Endpoint: String
    /// The release server's `snap.txt`.
    public let sourceURL: String
    public let controlEndpoint: String
    private let servers: [Task<Void, any Error>]
    private let stopping: StopFlag

    public static func start(_ settings: DevCloudSettings = DevCloudSettings()) async throws -> DevCloud {
        let state = CloudState(settings: settings)
        let stopping = StopFlag()
        var quiet = Logger(label: "devcloud")
        quiet.logLevel = .critical
        let routers: [Router<CloudContext>] = [
            Routes.imds(state, stopping), Routes.ec2(state, stopping), Routes.release(state, stopping), Routes.control(state),
        ]
        var tasks: [Task<Void, any Error>] = []
        var ports: [Int] = []
        let cloudID = String(UUID().uuidString.prefix(8))
        for (router, role) in zip(routers, ["imds", "ec2", "release", "control"]) {
            let (stream, continuation) = AsyncStream<Int>.makeStream()
            let app = Application(
                router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "DevCloud-\(role)-\(cloudID)"),
                onServerRunning: { channel in continuation.yield(channel.localAddress?.port ?? 0) }, logger: quiet)
            tasks.append(Task { try await app.run() })
            var iterator = stream.makeAsyncIterator()
            guard let port = await iterator.next(), port > 0 else {
                for task in tasks { task.cancel() }
                throw DevCloudError.noPort
            }
            ports.append(port)
        }
        return DevCloud(state: state, ports: ports, servers: tasks, stopping: stopping)
    }

    private init(state: CloudState, ports: [Int], servers: [Task<Void, any Error>], stopping: StopFlag) {
        self.state = state
        imdsEndpoint = "http://127.0.0.1:\(ports[0])"
        ec2Endpoint = "http://127.0.0.1:\(ports[1])"
        sourceURL = "http://127.0.0.1:\(ports[2])/snap.txt"
        controlEndpoint = "http://127.0.0.1:\(ports[3])"
        self.servers = servers
        self.stopping = stopping
    }

    /// The environment an agent needs to use this cloud: IMDS, EC2 and the release server.
    public var environment: [String: String] {
        ["AWS_EC2_METADATA_SERVICE_ENDPOINT": imdsEndpoint, "AWS_ENDPOINT_URL_EC2": ec2Endpoint, "AWS_ENDPOINT_URL_SSM": ec2Endpoint,
         "AWS_ENDPOINT_URL_AUTO_SCALING": ec2Endpoint,
         "SNAPMOUNT_SOURCE": sourceURL]
    }

    public func stop() async {
        stopping.set()
        for server in servers { server.cancel() }
        for server in servers { _ = await server.result }
    }
}

enum DevCloudError: Error {
    case noPort
}

/// Set once when DevCloud stops, so that hanging faults let go.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false

    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

/// A request context that keeps the connection, so a fault can reset it.
struct CloudContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

enum Routes {
    static func response(_ answer: Answer) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = answer.contentType
        for (name, value) in answer.headers {
            if let field = HTTPField.Name(name) { headers[field] = value }
        }
        return Response(status: .init(code: answer.status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: answer.body)))
    }

    /// Delivers a fault instead of an answer. `document` is the answer a `truncated` fault
    /// cuts in half: for IMDS and the release server the real one, so that half of a role
    /// name or of a snapshot id is what the agent gets.
    static func deliver(_ fault: FaultKind, service: String, context: CloudContext, stopping: StopFlag, hang: Duration,
                        document: String) async -> Response {
        switch fault {
        case .throttle where service != "ec2":
            // IMDS and plain web servers throttle with 429; EC2 with RequestLimitExceeded.
            return response(Answer(status: 429, body: "Too Many Requests\n", contentType: "text/plain"))
        case .http500:
            return response(Answer(status: 500, body: XMLText.error(code: "InternalError", message: "An internal error has occurred", requestID: requestID())))
        case .http503:
            return response(Answer(status: 503, body: XMLText.error(code: "Unavailable", message: "The server is overloaded or the service is unavailable.", requestID: requestID())))
        case .throttle:
            return response(Answer(status: 503, body: XMLText.error(code: "RequestLimitExceeded", message: "Request limit exceeded.", requestID: requestID())))
        case .reset, .lostResponse:
            await reset(context.channel)
            return response(Answer(status: 500, body: ""))
        case .noResponse:
            let until = ContinuousClock.now + hang
            // Hold the request until the client gives up (closes), DevCloud stops, or the hang ends.
            while ContinuousClock.now < until && !stopping.isSet && context.channel.isActive {
                try? await Task.sleep(for: .milliseconds(50))
            }
            await reset(context.channel)
            return response(Answer(status: 500, body: ""))
        case .truncated:
            return response(Answer(status: 200, body: String(document.prefix(document.count / 2))))
        case .malformed:
            return response(Answer(status: 200, body: "\u{0}\u{1}garbage <<< not xml"))
        case .html:
            return response(Answer(status: 502, body: "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>", contentType: "text/html"))
        }
    }

    static func reset(_ channel: any Channel) async {
        if let provider = channel as? any SocketOptionProvider {
            try? await provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
        }
        try? await channel.close().get()
    }

    static func received(_ request: Request, body: ByteBuffer) -> ReceivedRequest {
        var headers: [(name: String, value: String)] = []
        if let authority = request.head.authority { headers.append(("host", authority)) }
        for field in request.headers { headers.append((field.name.rawName, field.value)) }
        return ReceivedRequest(method: request.method.rawValue, path: request.uri.path, query: request.uri.query ?? "",
                               headers: headers, body: Array(buffer: body))
    }

    static func imds(_ state: CloudState, _ stopping: StopFlag) -> Router<CloudContext> {
        let router = Router(context: CloudContext.self)
        router.put("/latest/api/token") { request, context -> Response in
            if let fault = await state.fault(for: "imds:token") {
                await state.record("imds", "api/token", outcome: "fault:\(fault.rawValue)")
                return await deliver(fault, service: "imds", context: context, stopping: stopping, hang: state.settings.hangDuration,
                                     document: "AQAE" + randomHex(52))
            }
            let ttl = request.headers[HTTPField.Name("X-aws-ec2-metadata-token-ttl-seconds")!]
            return response(await state.issueIMDSToken(ttlHeader: ttl))
        }
        router.get("/latest/**") { request, context -> Response in
            await metadata(state, stopping, request, context, path: String(request.uri.path.dropFirst("/latest/".count)), instance: nil)
        }
        // Other instances' metadata: <IMDS>/<instance id>/latest/… (the storm's agents).
        router.put("/:instance/latest/api/token") { request, _ -> Response in
            let ttl = request.headers[HTTPField.Name("X-aws-ec2-metadata-token-ttl-seconds")!]
            return response(await state.issueIMDSToken(ttlHeader: ttl))
        }
        router.get("/:instance/latest/**") { request, context -> Response in
            let instance = context.parameters.get("instance") ?? ""
            let path = String(request.uri.path.dropFirst("/\(instance)/latest/".count))
            return await metadata(state, stopping, request, context, path: path, instance: instance)
        }
        return router
    }

    static func metadata(_ state: CloudState, _ stopping: StopFlag, _ request: Request, _ context: CloudContext, path: String,
                         instance: String?) async -> Response {
        if let fault = await state.fault(for: "imds:\(path)") {
            await state.record("imds", path, outcome: "fault:\(fault.rawValue)")
            return await deliver(fault, service: "imds", context: context, stopping: stopping, hang: state.settings.hangDuration,
                                 document: await state.imdsFaultDocument(path, instance: instance))
        }
        let token = request.headers[HTTPField.Name("X-aws-ec2-metadata-token")!]
        return response(await state.imdsGet(path: path, token: token, instance: instance))
    }

    static func ec2(_ state: CloudState, _ stopping: StopFlag) -> Router<CloudContext> {
        let router = Router(context: CloudContext.self)
        router.post("/") { request, context -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            let received = received(request, body: body)
            // SSM shares the endpoint; its requests say who they are for.
            if let target = received.header("X-Amz-Target"), target.hasPrefix("AmazonSSM.") {
                let fault = await state.fault(for: "ssm:" + target.dropFirst("AmazonSSM.".count))
                let answer = await state.ssm(received, fault: fault)
                if let fault {
                    return await deliver(fault, service: "ssm", context: context, stopping: stopping, hang: state.settings.hangDuration,
                                         document: "{\"Parameter\":{\"Name\":\"x\",")
                }
                return response(answer)
            }
            let action = QueryParameters.parse(formEncoded: String(buffer: body))?["Action"] ?? ""
            // So does Auto Scaling: its requests are signed for the service `autoscaling`.
            if let authorization = received.header("Authorization"), authorization.contains("/autoscaling/aws4_request") {
                let fault = await state.fault(for: "autoscaling:" + action)
                let answer = await state.autoScaling(received, fault: fault)
                if let fault {
                    return await deliver(fault, service: "ec2", context: context, stopping: stopping, hang: state.settings.hangDuration,
                                         document: XMLText.autoScalingResponse(action, requestID: requestID(), "<AutoScalingGroups><member>"))
                }
                return response(answer)
            }
            let fault = await state.fault(for: action)
            let answer = await state.ec2(received, fault: fault)
            if let fault {
                let document = XMLText.response(action, requestID: requestID(), "<volumeId>vol-0123456789abcdef0</volumeId><status>creating</status>")
                return await deliver(fault, service: "ec2", context: context, stopping: stopping, hang: state.settings.hangDuration,
                                     document: document)
            }
            return response(answer)
        }
        // EC2 answers anything else with an error document too; DevCloud records it.
        for method in [HTTPRequest.Method.get, .put, .delete, .head, .patch] {
            router.on("/**", method: method) { request, _ -> Response in
                await state.record("ec2", "\(request.method.rawValue) \(request.uri.path)", outcome: "InvalidAction")
                return response(Answer(status: 400, body: XMLText.error(code: "InvalidAction", message: "The action \(request.method.rawValue) \(request.uri.path) is not valid for this web service.", requestID: requestID())))
            }
        }
        return router
    }

    static func release(_ state: CloudState, _ stopping: StopFlag) -> Router<CloudContext> {
        let router = Router(context: CloudContext.self)
        router.get("/snap.txt") { _, context -> Response in
            if let fault = await state.fault(for: "release") {
                await state.record("release", "snap.txt", outcome: "fault:\(fault.rawValue)")
                return await deliver(fault, service: "release", context: context, stopping: stopping, hang: state.settings.hangDuration,
                                     document: await state.releaseFaultDocument())
            }
            let answer = await state.releaseAnswer()
            if answer.delayMilliseconds > 0 { try? await Task.sleep(for: .milliseconds(answer.delayMilliseconds)) }
            return response(Answer(status: answer.status, body: answer.body, contentType: answer.contentType))
        }
        return router
    }

    /// JSON control for the demo and for people: read the call log and the volume table,
    /// set faults, the release, snapshots, permissions and delays.
    static func json(_ value: some Encodable) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = (try? encoder.encode(value)) ?? Data("null".utf8)
        return response(Answer(status: 200, body: String(decoding: data, as: UTF8.self) + "\n", contentType: "application/json"))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request) async throws -> T {
        let body = try await request.body.collect(upTo: 1 << 20)
        return try JSONDecoder().decode(T.self, from: Data(buffer: body))
    }

    static func control(_ state: CloudState) -> Router<CloudContext> {
        let router = Router(context: CloudContext.self)
        router.get("/calls") { _, _ in json(await state.callLog()) }
        router.get("/volumes") { _, _ in json(await state.volumeTable()) }
        router.get("/access-keys") { _, _ in json(await state.accessKeyOwners()) }
        router.post("/faults") { request, _ in
            await state.addFault(try await decode(Fault.self, request))
            return json(["ok": true])
        }
        router.delete("/faults") { _, _ in
            await state.clearFaults()
            return json(["ok": true])
        }
        router.put("/release") { request, _ in
            await state.setRelease(try await decode(ReleaseResponse.self, request))
            return json(["ok": true])
        }
        router.post("/snapshots") { request, _ in
            await state.addSnapshot(try await decode(DevSnapshot.self, request))
            return json(["ok": true])
        }
        router.get("/snapshots") { _, _ in json(await state.snapshotTable()) }
        // An instance (new, or changed: group, lifecycleState, state) and the list of them.
        router.post("/instances") { request, _ in
            await state.addInstance(try await decode(DevInstance.self, request))
            return json(["ok": true])
        }
        router.get("/instances") { _, _ in json(await state.instanceList()) }
        // {"fail": true}: snapshots created from now on end in `error`.
        router.put("/snapshot-outcome") { request, _ in
            await state.setSnapshotsFail(try await decode([String: Bool].self, request)["fail"] ?? false)
            return json(["ok": true])
        }
        router.put("/permissions") { request, _ in
            await state.setPermissions(Set(try await decode([String].self, request)))
            return json(["ok": true])
        }
        router.put("/delays") { request, _ in
            await state.setDelays(try await decode(StateDelays.self, request))
            return json(["ok": true])
        }
        return router
    }
}
