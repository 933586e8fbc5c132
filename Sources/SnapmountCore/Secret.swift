/// A value that must never reach a log, a message or a crash report: a secret access key or
/// a session token. Every way Swift turns a value into text — interpolation, `print`,
/// `String(describing:)`, `dump`, `debugPrint` — shows `<redacted>`; the value itself comes
/// out only through ``exposedValue()``, which the signer and the HTTP layer call.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    private let value: String

    public init(_ value: String) {
        self.value = value
    }

    /// The secret itself. Call it only where the bytes go on the wire or into an HMAC.
    public func exposedValue() -> String {
        value
    }

    public var isEmpty: Bool { value.isEmpty }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "Secret(<redacted>)" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}
