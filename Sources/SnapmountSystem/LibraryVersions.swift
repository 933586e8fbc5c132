internal import CBlkid
internal import CCrypto
internal import CCurl
internal import CXML2

/// The run-time versions of the C libraries snapmount links, for `--version` and bug reports.
public enum LibraryVersions {
    public static var summary: String {
        let curl = String(cString: ccurl_library_version())
        let crypto = String(cString: ccrypto_version())
        let blkid = String(cString: cblkid_library_version())
        let xml = String(cString: cxml2_parser_version())
        return "libcurl \(curl), \(crypto), libblkid \(blkid), libxml2 \(xml)"
    }
}
