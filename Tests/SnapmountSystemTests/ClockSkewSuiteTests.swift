import Foundation
import Logging
import SnapmountCore
import SnapmountTestSupport
import Synchronization
import Testing

@testable import SnapmountSystem

/// The AWS SDKs' cross-SDK clock-skew cases (`../shared/aws-clock-skew-test-cases`), case by
/// case through the one retry loop every signed client uses: each operation's attempts are
/// answered as the case says, on the case's clock, and the loop must sign at the expected
/// time, make exactly the listed attempts, end as expected and hold the expected skew.
@Suite("Clock skew: the AWS SDKs' cross-SDK cases")
struct ClockSkewSuiteTests {
    static let file = "aws-clock-skew-test-cases/clock-skew-test-cases.json"

    struct Suite: Decodable {
        let tests: [Case]
    }

    struct Case: Decodable, CustomTestStringConvertible, Sendable {
        let description: String
        let operations: [Operation]
        var testDescription: String { description }
    }

    struct Operation: Decodable, Sendable {
        let initialClientSkew: Int64
        let maxAttempts: Int?
        let attempts: [AttemptCase]
        let expectedClientSkew: Int64
        let expectedOutcome: String
    }

    struct AttemptCase: Decodable, Sendable {
        let clientTimeAtSend: String
        let clientTimeAtReceive: String
        let expectedSigningTime: String
        let response: Response
    }

    struct Response: Decodable, Sendable {
        let statusCode: Int
        let headers: [String: String]
        let errorCode: String?
    }

    /// The cases, read when the suite is defined; one placeholder when the file is missing, so
    /// that under CI the test runs and fails (outside CI the trait skips it, with the reason).
    static let cases: [Case] = {
        guard SharedData.present(file), let data = try? Data(contentsOf: SharedData.url(file)),
              let suite = try? JSONDecoder().decode(Suite.self, from: data)
        else { return [Case(description: "the case file, missing or unreadable", operations: [])] }
        return suite.tests
    }()

    /// The SDKs' default when a case gives no `maxAttempts`.
    static let defaultMaxAttempts = 3

    @Test("each case: signing time, attempts, outcome and the skew carried to the next operation",
          .enabled(if: SharedData.enabled(file), SharedData.reason(file)), arguments: cases)
    func crossSDKCase(_ testCase: Case) throws {
        _ = try SharedData.require(Self.file)
        let operations = try #require(testCase.operations.isEmpty ? nil : testCase.operations, "the case file did not decode")
        let clock = ScriptedClock()
        let time = AWSTime(clock: clock, correction: operations[0].initialClientSkew)
        for (index, operation) in operations.enumerated() {
            #expect(time.correction == operation.initialClientSkew, "operation \(index + 1) starts with the skew the last one left")
            let loop = RetryLoop(policy: RetryPolicy(maxAttempts: operation.maxAttempts ?? Self.defaultMaxAttempts, baseDelay: .zero, maxBackoff: .zero),
                                 clock: clock, service: "EC2", time: time, logger: quietLogger)
            clock.script = try operation.attempts.flatMap { [try Self.time($0.clientTimeAtSend), try Self.time($0.clientTimeAtReceive)] }
            var made = 0
            let outcome: String
            do throws(EC2CallError) {
                try loop.run("Test") { (context: inout AttemptContext) -> Attempt<Void, EC2CallError> in
                    made += 1
                    guard made <= operation.attempts.count else {
                        Issue.record("operation \(index + 1): attempt \(made), the case lists \(operation.attempts.count)")
                        return .failure(.returnedFalse(action: "Test"), .final)
                    }
                    let attempt = operation.attempts[made - 1]
                    let signed = context.signingTime()
                    #expect(signed == (try? Self.time(attempt.expectedSigningTime)), "operation \(index + 1), attempt \(made): signed at \(signed)")
                    context.answer = (attempt.response.headers["Date"], attempt.response.headers["Age"])
                    guard let code = attempt.response.errorCode else { return .success(()) }
                    let error = EC2CallError.service(EC2ServiceError(action: "Test", code: code, message: "", requestID: "",
                                                                     httpStatus: attempt.response.statusCode))
                    return .failure(error, EC2Client.retryClass(of: error), code: code)
                }
                outcome = "success"
            } catch {
                outcome = "error"
            }
            #expect(made == operation.attempts.count, "operation \(index + 1): attempts made")
            #expect(outcome == operation.expectedOutcome, "operation \(index + 1): outcome")
            #expect(time.correction == operation.expectedClientSkew, "operation \(index + 1): skew afterwards")
            #expect(clock.script.isEmpty, "operation \(index + 1): the clock was read \(clock.script.count) times fewer than the case's times")
        }
    }

    static func time(_ text: String) throws -> UTCTimestamp {
        try #require(UTCTimestamp(iso8601: text), "\(text) is no ISO 8601 time")
    }
}

/// A clock whose `now()` answers the scripted readings in order: read at each send (the
/// signing time) and each receive. Sleeps return at once.
final class ScriptedClock: AgentClock, @unchecked Sendable {
    private let lock = NSLock()
    private var readings: [UTCTimestamp] = []

    var script: [UTCTimestamp] {
        get { lock.withLock { readings } }
        set { lock.withLock { readings = newValue } }
    }

    func now() -> UTCTimestamp {
        lock.withLock {
            guard !readings.isEmpty else {
                Issue.record("the clock was read more often than the case has times")
                return UTCTimestamp(secondsSinceEpoch: 0)
            }
            return readings.removeFirst()
        }
    }

    func monotonic() -> ContinuousClock.Instant { ContinuousClock.now }
    func sleep(for duration: Duration) {}
    func random() -> Double { 0 }
}
