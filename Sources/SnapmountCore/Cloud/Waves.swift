/// A number of hosts, given as a count or as a share of the deployment's hosts:
/// `--wave 4`, `--wave 25%`, `--max-failures 0`, `--max-failures 10%`.
public enum HostCount: Sendable, Equatable, CustomStringConvertible {
    case hosts(Int)
    case percent(Int)

    /// `N` (digits only, 0 or more) or `P%` (1 to 100); `nil` for anything else.
    public init?(_ text: String) {
        let percent = text.hasSuffix("%")
        let digits = percent ? text.dropLast() : Substring(text)
        guard !digits.isEmpty, digits.count <= 6, digits.utf8.allSatisfy({ (48...57).contains($0) }), let value = Int(digits) else { return nil }
        if percent {
            guard (1...100).contains(value) else { return nil }
            self = .percent(value)
        } else {
            self = .hosts(value)
        }
    }

    /// A wave of a deployment to `total` hosts: a share rounded up, at least one host.
    public func wave(of total: Int) -> Int {
        switch self {
        case .hosts(let count): max(1, count)
        case .percent(let share): max(1, (total * share + 99) / 100)
        }
    }

    /// The failures a deployment to `total` hosts may have and go on: a share rounded down
    /// (10% of 9 hosts is 0: the first failure stops it).
    public func bound(of total: Int) -> Int {
        switch self {
        case .hosts(let count): count
        case .percent(let share): total * share / 100
        }
    }

    public var description: String {
        switch self {
        case .hosts(let count): "\(count)"
        case .percent(let share): "\(share)%"
        }
    }
}

/// The order a deployment reaches its hosts in.
public enum WavePlan {
    /// `items` in waves of `size`. Without `byZone`, each wave takes its hosts from the zones
    /// in turn, so no wave takes out one zone before the others; with it, a wave holds the
    /// hosts of one zone only, zone after zone in name order (a zone's last wave may be
    /// smaller). Within a zone the items keep their order.
    public static func waves<Item>(_ items: [Item], size: Int, byZone: Bool, zone: (Item) -> String) -> [[Item]] {
        let size = max(1, size)
        var zones: [String: [Item]] = [:]
        for item in items { zones[zone(item), default: []].append(item) }
        let order = zones.keys.sorted()
        if byZone { return order.flatMap { chunks(zones[$0] ?? [], size) } }
        var interleaved: [Item] = []
        interleaved.reserveCapacity(items.count)
        var index = 0
        while interleaved.count < items.count {
            for name in order {
                if let members = zones[name], index < members.count { interleaved.append(members[index]) }
            }
            index += 1
        }
        return chunks(interleaved, size)
    }

    private static func chunks<Item>(_ items: [Item], _ size: Int) -> [[Item]] {
        stride(from: 0, to: items.count, by: size).map { Array(items[$0..<min($0 + size, items.count)]) }
    }
}
