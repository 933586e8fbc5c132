import SnapmountCore
import Testing

@Suite("fstab editing")
struct FstabTests {
    static var entry: FstabEntry {
        get throws {
            FstabEntry(label: try FilesystemLabel(parsing: "code_release"), mountPoint: try AbsolutePath(parsing: "/release"),
                       filesystem: .ext4, options: try MountOptions(parsing: "defaults,nofail"))
        }
    }

    static func ensure(_ text: String) throws -> FstabChange {
        try FstabEditor.ensure(try entry, in: Array(text.utf8))
    }

    static let line = "LABEL=code_release /release ext4 defaults,nofail,x-systemd.device-timeout=6m,x-systemd.requires=snapmount.service 0 0"

    @Test("the entry: by label, nofail, a short device timeout, mounted only after the agent ran, no boot-time fsck (the agent checks)")
    func line() throws {
        #expect(try Self.entry.line == Self.line)
        let xfs = FstabEntry(label: try FilesystemLabel(parsing: "rel"), mountPoint: try AbsolutePath(parsing: "/srv/rel"), filesystem: .xfs,
                             options: try MountOptions(parsing: "noatime,x-systemd.device-timeout=30s"))
        #expect(xfs.line == "LABEL=rel /srv/rel xfs noatime,x-systemd.device-timeout=30s,nofail,x-systemd.requires=snapmount.service 0 0")
    }

    @Test("the line an earlier snapmount wrote is updated in place; every other byte kept", arguments: [
        "LABEL=code_release /release ext4 defaults,nofail,x-systemd.device-timeout=10s 0 2",
        "LABEL=code_release /release ext4 defaults,nofail,x-systemd.device-timeout=10s 0 0",
    ])
    func earlierForm(old: String) throws {
        let text = "# fstab\nUUID=1 / ext4 defaults 0 1\n\(old)\n/swapfile none swap sw 0 0"
        guard case .replace(let number, let bytes) = try Self.ensure(text) else {
            Issue.record("the earlier line was not replaced")
            return
        }
        #expect(number == 3)
        #expect(String(decoding: bytes, as: UTF8.self) == "# fstab\nUUID=1 / ext4 defaults 0 1\n\(Self.line)\n/swapfile none swap sw 0 0")
        // An operator's own options are theirs: that line is a conflict, not ours to rewrite.
        #expect(throws: FstabError.self) {
            try Self.ensure(text.replacingOccurrences(of: "defaults,nofail", with: "defaults,noatime,nofail"))
        }
    }

    @Test("appending keeps every byte and adds exactly one line", arguments: [
        "", "# fstab\n", "UUID=1 / ext4 defaults 0 1", "UUID=1 / ext4 defaults 0 1\n\n# end\n", "a\tb\r\n",
    ])
    func append(text: String) throws {
        guard case .append(let bytes) = try Self.ensure(text) else {
            Issue.record("nothing appended")
            return
        }
        let output = String(decoding: bytes, as: UTF8.self)
        #expect(output.hasPrefix(text))
        let added = String(decoding: bytes.dropFirst(text.utf8.count), as: UTF8.self)
        let expected = (text.isEmpty || text.utf8.last == UInt8(ascii: "\n") ? "" : "\n") + (try Self.entry.line) + "\n"
        #expect(String(added) == expected)
    }

    @Test("an identical entry, written with other white space, is left alone")
    func identical() throws {
        #expect(try Self.ensure("UUID=1 / ext4 defaults 0 1\n" + Self.line.replacingOccurrences(of: " /release ", with: "\t/release   ") + "\n") == .unchanged)
        #expect(try Self.ensure(Self.line.replacingOccurrences(of: " /release ", with: " /release/ ")) == .unchanged)
    }

    @Test("another entry for the mount point, or the label mounted elsewhere, is a conflict showing both lines", arguments: [
        "/dev/sdf /release ext4 defaults 0 0", "LABEL=code_release /release ext4 defaults 0 2", "LABEL=code_release /srv ext4 defaults 0 2",
        "/dev/sdz /rel\\040ease ext4 defaults 0 0".replacingOccurrences(of: "rel\\040ease", with: "release"),
    ])
    func conflict(existing: String) {
        #expect(throws: FstabError.self) { try Self.ensure("# x\n" + existing + "\n") }
        do {
            _ = try Self.ensure("# x\n" + existing + "\n")
        } catch let error as FstabError {
            #expect(error.exitStatus == .dataRefused)
            guard case .conflict(let line, let shown, let wanted) = error else {
                Issue.record("not a conflict: \(error)")
                return
            }
            #expect(line == 2)
            #expect(shown == existing)
            #expect(wanted == (try? Self.entry.line))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("comments and other mounts do not conflict")
    func unrelated() throws {
        guard case .append = try Self.ensure("# LABEL=code_release /release ext4\n/dev/sdb /data xfs defaults 0 0\n") else {
            Issue.record("expected an append")
            return
        }
    }
}

@Suite("mount options for the kernel")
struct KernelMountOptionsTests {
    @Test("fstab-only options are left out; flags and data are split")
    func split() {
        let options = KernelMountOptions(["defaults", "nofail", "x-systemd.device-timeout=10s", "noatime", "nosuid", "discard",
                                          "errors=remount-ro", "_netdev", "comment=x", "ro", "rw"])
        #expect(options.flags == [.noatime, .nosuid])
        #expect(options.data == ["discard", "errors=remount-ro"])
        #expect(options.bits == MountFlag.noatime.bit | MountFlag.nosuid.bit)
    }

    @Test("an option that clears a flag given before it removes that flag", arguments: [
        (["ro", "rw"], [MountFlag]()), (["noexec", "exec", "noexec"], [.noexec]), (["nosuid", "nodev", "suid"], [.nodev]),
        (["sync", "async"], []), (["noatime", "atime", "relatime"], [.relatime]), (["mand", "nomand"], []),
    ])
    func clearing(options: [String], flags: [MountFlag]) {
        #expect(KernelMountOptions(options).flags == flags)
    }

    @Test("every flag has its own bit")
    func distinctBits() {
        #expect(Set(MountFlag.allCases.map(\.bit)).count == MountFlag.allCases.count)
    }
}
