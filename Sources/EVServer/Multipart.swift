import Foundation

/// Just enough of `multipart/form-data` (RFC 7578) to take an uploaded file out of a browser
/// form or `curl -F`.
enum Multipart {
  struct Failure: Error, CustomStringConvertible {
    let description: String
  }

  /// The bytes of the part named `image` or `file`, else of the first part with a file name.
  ///
  /// - Parameter contentType: the full header, whose `boundary` parameter is case-sensitive.
  static func fileBytes(_ body: [UInt8], contentType: String) throws(Failure) -> [UInt8] {
    guard let boundary = parameter("boundary", of: contentType), !boundary.isEmpty else {
      throw Failure(description: "multipart/form-data without a boundary parameter")
    }
    let parts = try split(body, boundary: Array(("--" + boundary).utf8))
    let named = parts.first { ["image", "file"].contains($0.name) }
    guard let part = named ?? parts.first(where: { $0.filename != nil }) else {
      throw Failure(
        description: "the multipart body has no file: send the image in a part named \"image\"")
    }
    return part.data
  }

  struct Part {
    var name: String?
    var filename: String?
    var data: [UInt8]
  }

  /// A `; key=value` parameter of a header value, quotes removed.
  static func parameter(_ key: String, of header: String) -> String? {
    for piece in header.split(separator: ";").dropFirst() {
      let pair = piece.split(separator: "=", maxSplits: 1)
      guard pair.count == 2,
        pair[0].trimmingCharacters(in: .whitespaces).lowercased() == key.lowercased()
      else { continue }
      var value = pair[1].trimmingCharacters(in: .whitespaces)
      if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
        value = String(value.dropFirst().dropLast())
      }
      return value
    }
    return nil
  }

  static func split(_ body: [UInt8], boundary delimiter: [UInt8]) throws(Failure) -> [Part] {
    let crlf: [UInt8] = [13, 10]
    guard var position = find(delimiter, in: body, from: 0) else {
      throw Failure(description: "the multipart body does not contain its boundary")
    }
    var parts: [Part] = []
    while true {
      position += delimiter.count
      if body[position...].starts(with: [45, 45]) { break }  // "--": the closing delimiter
      guard body[position...].starts(with: crlf) else {
        throw Failure(description: "malformed multipart body: no line break after a boundary")
      }
      position += 2
      guard let headerEnd = find(crlf + crlf, in: body, from: position) else {
        throw Failure(description: "malformed multipart body: a part's headers do not end")
      }
      let headers = String(decoding: body[position..<headerEnd], as: UTF8.self)
      let dataStart = headerEnd + 4
      guard let next = find(crlf + delimiter, in: body, from: dataStart) else {
        throw Failure(description: "malformed multipart body: a part is not closed by the boundary")
      }
      var part = Part(data: Array(body[dataStart..<next]))
      for line in headers.split(separator: "\r\n") {
        let field = line.split(separator: ":", maxSplits: 1)
        guard field.count == 2, field[0].lowercased() == "content-disposition" else { continue }
        let value = String(field[1])
        part.name = parameter("name", of: value)
        part.filename = parameter("filename", of: value)
      }
      parts.append(part)
      position = next + 2
    }
    return parts
  }

  /// First index of `needle` in `haystack` at or after `start`.
  static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
    guard let first = needle.first, haystack.count >= needle.count else { return nil }
    let last = haystack.count - needle.count
    var i = start
    while i <= last {
      if haystack[i] == first && haystack[i..<(i + needle.count)].elementsEqual(needle) {
        return i
      }
      i += 1
    }
    return nil
  }
}
