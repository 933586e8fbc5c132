import SnapmountCore
import Testing

@Suite("Waves: how many hosts at a time, and how many may fail")
struct WaveTests {
    @Test("N and P% parse; anything else is refused; a wave rounds a share up (at least 1), a failure bound rounds it down")
    func counts() throws {
        #expect(HostCount("4") == .hosts(4) && HostCount("0") == .hosts(0) && HostCount("25%") == .percent(25))
        for bad in ["", "%", "0%", "101%", "-1", "+3", " 3", "3 ", "1.5", "x%", "1234567"] { #expect(HostCount(bad) == nil, "\(bad)") }
        #expect(try #require(HostCount("25%")).wave(of: 9) == 3)
        #expect(try #require(HostCount("10%")).wave(of: 3) == 1)
        #expect(try #require(HostCount("0")).wave(of: 5) == 1)
        #expect(try #require(HostCount("10%")).bound(of: 9) == 0, "10% of 9 hosts: the first failure stops it")
        #expect(try #require(HostCount("50%")).bound(of: 9) == 4)
        #expect(try #require(HostCount("2")).bound(of: 9) == 2)
    }

    @Test("without --by-zone every wave takes from the zones in turn; with it, one zone per wave, zone after zone")
    func plans() {
        let hosts = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c")]
        let spread = WavePlan.waves(hosts, size: 2, byZone: false) { $0.1 }.map { $0.map(\.0) }
        #expect(spread == [["a1", "b1"], ["c1", "a2"], ["b2", "a3"]])
        let zoned = WavePlan.waves(hosts, size: 2, byZone: true) { $0.1 }.map { $0.map(\.0) }
        #expect(zoned == [["a1", "a2"], ["a3"], ["b1", "b2"], ["c1"]])
        #expect(WavePlan.waves([Int](), size: 3, byZone: false) { _ in "" }.isEmpty)
        #expect(WavePlan.waves(Array(1...5), size: 10, byZone: false) { _ in "z" } == [[1, 2, 3, 4, 5]])
    }
}
