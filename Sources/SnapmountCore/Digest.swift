internal import CCrypto

/// libcrypto failed to compute a digest: only possible when it cannot allocate memory.
public struct CryptoError: SnapmountError {
    public let operation: String
    public var exitStatus: ExitStatus { .internalError }
    public var description: String { "libcrypto failed to compute \(operation)" }
}

/// SHA-256. The corresponding C function is `EVP_Digest`.
public enum SHA256 {
    public static let byteCount = 32

    public static func hash(_ bytes: [UInt8]) throws(CryptoError) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: byteCount)
        let ok = bytes.withUnsafeBytes { input in
            digest.withUnsafeMutableBufferPointer { output -> Int32 in
                guard let out = output.baseAddress else { return 0 }
                return ccrypto_sha256(input.baseAddress, input.count, out)
            }
        }
        guard ok == 1 else { throw CryptoError(operation: "SHA-256") }
        return digest
    }

    public static func hash(_ text: String) throws(CryptoError) -> [UInt8] {
        try hash(Array(text.utf8))
    }
}

/// HMAC with SHA-256. The corresponding C function is `EVP_Q_mac`.
public enum HMACSHA256 {
    public static func authenticationCode(key: [UInt8], message: [UInt8]) throws(CryptoError) -> [UInt8] {
        var mac = [UInt8](repeating: 0, count: SHA256.byteCount)
        let ok = key.withUnsafeBytes { keyBytes in
            message.withUnsafeBytes { messageBytes in
                mac.withUnsafeMutableBufferPointer { output -> Int32 in
                    guard let out = output.baseAddress else { return 0 }
                    return ccrypto_hmac_sha256(
                        keyBytes.baseAddress, keyBytes.count,
                        messageBytes.baseAddress, messageBytes.count,
                        out)
                }
            }
        }
        guard ok == 1 else { throw CryptoError(operation: "HMAC-SHA256") }
        return mac
    }

    public static func authenticationCode(key: [UInt8], message: String) throws(CryptoError) -> [UInt8] {
        try authenticationCode(key: key, message: Array(message.utf8))
    }
}

/// Compares two byte strings in time that depends only on their length, for signatures.
/// The corresponding C function is `CRYPTO_memcmp`.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    return a.withUnsafeBytes { x in
        b.withUnsafeBytes { y in
            guard let p = x.baseAddress, let q = y.baseAddress else { return true }  // both empty
            return ccrypto_memcmp(p, q, a.count) == 0
        }
    }
}

extension Collection<UInt8> {
    /// Lower-case hexadecimal, as SigV4 writes hashes and signatures.
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(count * 2)
        for byte in self {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
