import SnapmountCore
import Testing

/// Vectors from AWS's published SigV4 documentation and the RFCs behind the primitives.
@Suite("SigV4: documented vectors")
struct SigV4Tests {
    static let secret = Secret("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")

    @Test("SHA-256 of the empty string (FIPS 180-4)")
    func sha256Empty() throws {
        #expect(try SHA256.hash([]).hexString == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(try SHA256.hash("abc").hexString == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test("HMAC-SHA256, RFC 4231 test case 1 and 2")
    func hmacRFC4231() throws {
        let key = [UInt8](repeating: 0x0b, count: 20)
        #expect(try HMACSHA256.authenticationCode(key: key, message: "Hi There").hexString
                == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(try HMACSHA256.authenticationCode(key: Array("Jefe".utf8), message: "what do ya want for nothing?").hexString
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test("signing key derivation example (AWS General Reference: 20120215, us-east-1, iam)")
    func signingKeyExample() throws {
        let signer = SigV4Signer(region: "us-east-1", service: "iam")
        #expect(try signer.signingKey(secret: Self.secret, dateStamp: "20120215").hexString
                == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d")
    }

    @Test("IAM ListUsers example (AWS General Reference, signature version 4 walkthrough)")
    func listUsersExample() throws {
        let request = SigV4Request(
            method: "GET", path: "/", query: [("Action", "ListUsers"), ("Version", "2010-05-08")],
            headers: [("Host", "iam.amazonaws.com"),
                      ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")])
        let time = try #require(UTCTimestamp(amzDate: "20150830T123600Z"))
        let signature = try SigV4Signer(region: "us-east-1", service: "iam")
            .sign(request, credentials: AWSCredentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: Self.secret), at: time)
        #expect(signature.canonicalRequest == """
            GET
            /
            Action=ListUsers&Version=2010-05-08
            content-type:application/x-www-form-urlencoded; charset=utf-8
            host:iam.amazonaws.com
            x-amz-date:20150830T123600Z

            content-type;host;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """)
        #expect(try SHA256.hash(signature.canonicalRequest).hexString
                == "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59")
        #expect(signature.signature == "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
        #expect(signature.authorization == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
    }

    @Test("a session token is signed and sent; the headers to add are date, token, authorization")
    func sessionTokenHeaders() throws {
        let credentials = AWSCredentials(accessKeyID: "AKID", secretAccessKey: Secret("s"), sessionToken: Secret("tok/en+="))
        let time = UTCTimestamp(secondsSinceEpoch: 1_440_938_160)
        let signature = try SigV4Signer(region: "eu-west-1", service: "ec2").sign(
            SigV4Request(method: "POST", headers: [("Host", "ec2.eu-west-1.amazonaws.com")], body: Array("Action=X".utf8)),
            credentials: credentials, at: time)
        #expect(signature.headers.map(\.name) == ["X-Amz-Date", "X-Amz-Security-Token", "Authorization"])
        #expect(signature.headers[1].value == "tok/en+=")
        #expect(signature.canonicalRequest.contains("x-amz-security-token:tok/en+=\n"))
        #expect(signature.authorization.contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"))
    }

    @Test("a form-encoded EC2 body: the payload hash covers the exact bytes sent")
    func formBody() throws {
        var parameters = QueryParameters()
        parameters.append("Version", "2016-11-15")
        parameters.append("Action", "DescribeVolumes")
        parameters.append("Filter.1.Name", "tag:snapmount:instance-id")
        parameters.append("Filter.1.Value.1", "i-0123 456")
        let body = parameters.formEncoded
        #expect(body == "Action=DescribeVolumes&Filter.1.Name=tag%3Asnapmount%3Ainstance-id&Filter.1.Value.1=i-0123%20456&Version=2016-11-15")
        #expect(QueryParameters.parse(formEncoded: body) == QueryParameters([
            ("Action", "DescribeVolumes"), ("Filter.1.Name", "tag:snapmount:instance-id"),
            ("Filter.1.Value.1", "i-0123 456"), ("Version", "2016-11-15"),
        ]))
        let signature = try SigV4Signer(region: "us-east-1", service: "ec2").sign(
            SigV4Request(method: "POST", headers: [("Host", "ec2.us-east-1.amazonaws.com")], body: Array(body.utf8)),
            credentials: AWSCredentials(accessKeyID: "AKID", secretAccessKey: Secret("s")),
            at: UTCTimestamp(secondsSinceEpoch: 0))
        #expect(signature.canonicalRequest.hasSuffix(try SHA256.hash(body).hexString))
    }

    @Test("a request without Host, or with a line break in a header, is refused")
    func refusesBadRequests() {
        let signer = SigV4Signer(region: "us-east-1", service: "ec2")
        let credentials = AWSCredentials(accessKeyID: "AKID", secretAccessKey: Secret("s"))
        let time = UTCTimestamp(secondsSinceEpoch: 0)
        #expect(throws: SigV4Error.missingHost) {
            try signer.sign(SigV4Request(method: "GET", headers: []), credentials: credentials, at: time)
        }
        #expect(throws: SigV4Error.invalidHeader("X-Evil")) {
            try signer.sign(SigV4Request(method: "GET", headers: [("Host", "h"), ("X-Evil", "a\r\nInjected: 1")]),
                            credentials: credentials, at: time)
        }
    }

    @Test("AWS percent-encoding", arguments: [
        ("", ""), ("abc-_.~XYZ019", "abc-_.~XYZ019"), ("a b", "a%20b"), ("a+b", "a%2Bb"), ("a/b", "a%2Fb"),
        ("ሴ", "%E1%88%B4"), ("*", "%2A"), ("=&", "%3D%26"),
    ])
    func percentEncoding(input: String, expected: String) {
        #expect(AWSPercentEncoding.encode(input) == expected)
        #expect(AWSPercentEncoding.decode(expected) == input)
    }

    @Test("percent-decoding rejects a broken escape or non-UTF-8 bytes")
    func percentDecodingRejects() {
        #expect(AWSPercentEncoding.decode("%4") == nil)
        #expect(AWSPercentEncoding.decode("%zz") == nil)
        #expect(AWSPercentEncoding.decode("%FF") == nil)
        #expect(AWSPercentEncoding.decode("a+b", plusIsSpace: true) == "a b")
    }
}

@Suite("UTC timestamps")
struct UTCTimestampTests {
    @Test("known instants", arguments: [
        (Int64(0), "19700101T000000Z", "1970-01-01T00:00:00Z"),
        (1_440_938_160, "20150830T123600Z", "2015-08-30T12:36:00Z"),
        (1_709_251_199, "20240229T235959Z", "2024-02-29T23:59:59Z"),
        (951_868_800, "20000301T000000Z", "2000-03-01T00:00:00Z"),
    ])
    func knownInstants(seconds: Int64, amzDate: String, iso: String) {
        let time = UTCTimestamp(secondsSinceEpoch: seconds)
        #expect(time.amzDate == amzDate)
        #expect(time.iso8601 == iso)
        #expect(UTCTimestamp(amzDate: amzDate) == time)
        #expect(UTCTimestamp(iso8601: iso) == time)
    }

    @Test("ISO 8601 variants AWS returns")
    func isoVariants() {
        let expected = UTCTimestamp(secondsSinceEpoch: 1_440_938_160)
        #expect(UTCTimestamp(iso8601: "2015-08-30T12:36:00.000Z") == expected)
        #expect(UTCTimestamp(iso8601: "2015-08-30T12:36:00+00:00") == expected)
    }

    @Test("malformed dates are rejected", arguments: [
        "", "2015-08-30", "2015-02-30T00:00:00Z", "2015-08-30T24:00:00Z", "2015-08-30T12:36:00", "2015-08-30T12:36:00.Z",
        "20150830T123600", "2015083OT123600Z", "2015-08-30T12:36:00-05:00",
    ])
    func malformed(text: String) {
        #expect(UTCTimestamp(iso8601: text) == nil)
        #expect(UTCTimestamp(amzDate: text) == nil)
    }
}
