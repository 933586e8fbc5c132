/// Command lines given as one option (`push --ssh`), read once into words, and written back
/// for the one program that wants a string (rsync's `-e`). Every other use is an argv.
public enum ShellWords {
    /// Splits as a POSIX shell splits a simple command, without expansions: blanks separate
    /// words; `'…'` is literal; `"…"` keeps blanks, and a backslash there escapes `"`, `\`,
    /// `$` and `` ` ``; a backslash outside quotes escapes the next character.
    public static func split(_ text: String) throws(InvalidValue) -> [String] {
        var words: [String] = []
        var current = ""
        var inWord = false
        var iterator = text.makeIterator()
        while let character = iterator.next() {
            switch character {
            case " ", "\t", "\n":
                if inWord { words.append(current) }
                current = ""
                inWord = false
            case "'":
                inWord = true
                while true {
                    guard let next = iterator.next() else { throw InvalidValue("has an unclosed ' quote: \(text.quotedForMessage())", expected: Self.expected) }
                    if next == "'" { break }
                    current.append(next)
                }
            case "\"":
                inWord = true
                while true {
                    guard let next = iterator.next() else { throw InvalidValue("has an unclosed \" quote: \(text.quotedForMessage())", expected: Self.expected) }
                    if next == "\"" { break }
                    if next == "\\" {
                        guard let escaped = iterator.next() else { throw InvalidValue("ends in a backslash: \(text.quotedForMessage())", expected: Self.expected) }
                        if !"\"\\$`".contains(escaped) { current.append("\\") }
                        current.append(escaped)
                    } else {
                        current.append(next)
                    }
                }
            case "\\":
                guard let escaped = iterator.next() else { throw InvalidValue("ends in a backslash: \(text.quotedForMessage())", expected: Self.expected) }
                inWord = true
                current.append(escaped)
            default:
                inWord = true
                current.append(character)
            }
        }
        if inWord { words.append(current) }
        return words
    }

    static let expected = "a command and its arguments, quoted as for a shell"

    /// `'word'` for a POSIX shell (the remote commands run through the login shell).
    public static func shellQuoted(_ word: String) -> String {
        "'" + word.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }

    /// The words as rsync's `-e` reads its string back: split on spaces, `'…'` keeps them, a
    /// doubled quote inside is one quote (rsync(1), `--rsh`); no backslashes.
    public static func rsyncCommand(_ words: [String]) -> String {
        words.map { "'" + $0.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") + "'" }.joined(separator: " ")
    }
}
