/// The release of snapmount this binary is.
public enum SnapmountVersion {
    public static let current = "0.1.0"
}
