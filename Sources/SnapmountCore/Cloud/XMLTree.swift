internal import CXML2

/// An XML element reduced to what the EC2 decoders need: its local name (namespace
/// dropped), its own text, and its child elements in order. Decoders look children up by
/// name, so they depend neither on namespace strings nor on element order.
public struct XMLElement: Sendable, Equatable {
    public let name: String
    public let text: String
    public let children: [XMLElement]

    public init(name: String, text: String = "", children: [XMLElement] = []) {
        self.name = name
        self.text = text
        self.children = children
    }

    /// The first child with this local name.
    public func child(_ name: String) -> XMLElement? {
        children.first { $0.name == name }
    }

    /// The trimmed text of the first child with this name, if present.
    public func value(_ name: String) -> String? {
        child(name).map { $0.text.trimmingWhitespace() }
    }

    /// `<name><item>…</item><item>…</item></name>`, the EC2 list form.
    public func items(_ name: String) -> [XMLElement] {
        child(name)?.children.filter { $0.name == "item" } ?? []
    }

    /// The first element with this name anywhere below (depth first), this one included.
    public func descendant(_ name: String) -> XMLElement? {
        if self.name == name { return self }
        for child in children {
            if let found = child.descendant(name) { return found }
        }
        return nil
    }
}

// libxml2 must be initialised once, before any thread parses.
private let xmlInitialized: Bool = {
    xmlInitParser()
    return true
}()

/// Parses XML with libxml2: no network, no DTD loading, no entity expansion (XXE-safe),
/// errors not printed. `nil` for anything that is not a well-formed document.
/// The corresponding C function is `xmlReadMemory`.
public func parseXML(_ bytes: [UInt8]) -> XMLElement? {
    guard xmlInitialized, !bytes.isEmpty, bytes.count < Int(Int32.max) else { return nil }
    let options = Int32(XML_PARSE_NONET.rawValue | XML_PARSE_NOERROR.rawValue | XML_PARSE_NOWARNING.rawValue | XML_PARSE_NOCDATA.rawValue)
    let document = bytes.withUnsafeBufferPointer { buffer in
        buffer.baseAddress.flatMap { base in
            base.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                xmlReadMemory($0, Int32(buffer.count), nil, "UTF-8", options)
            }
        }
    }
    guard let document else { return nil }
    defer { xmlFreeDoc(document) }
    guard let root = xmlDocGetRootElement(document) else { return nil }
    return element(root)
}

private func element(_ node: xmlNodePtr) -> XMLElement {
    var text = ""
    var children: [XMLElement] = []
    var child = node.pointee.children
    while let current = child {
        switch current.pointee.type {
        case XML_ELEMENT_NODE:
            children.append(element(current))
        case XML_TEXT_NODE, XML_CDATA_SECTION_NODE:
            if let content = current.pointee.content { text += String(cString: content) }
        default:
            break
        }
        child = current.pointee.next
    }
    let name = node.pointee.name.map { String(cString: $0) } ?? ""
    return XMLElement(name: name, text: text, children: children)
}
