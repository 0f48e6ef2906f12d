import Foundation
import TestSupport
import Testing

/// A parsed JSON document. `JSONSerialization` on Linux rounds some doubles wrongly
/// (0.30000000000000004 comes back as 0.3000000000000001); `JSONDecoder` parses them exactly,
/// and the fixtures' float64 values are compared exactly, so fixtures are read through this.
enum JSONValue: Decodable {
  case null
  case bool(Bool)
  case int(Int)
  case double(Double)
  case string(String)
  case array([JSONValue])
  case object([String: JSONValue])

  init(from decoder: any Decoder) throws {
    let c = try decoder.singleValueContainer()
    if c.decodeNil() {
      self = .null
    } else if let v = try? c.decode(Bool.self) {
      self = .bool(v)
    } else if let v = try? c.decode(Int.self) {
      self = .int(v)
    } else if let v = try? c.decode(Double.self) {
      self = .double(v)
    } else if let v = try? c.decode(String.self) {
      self = .string(v)
    } else if let v = try? c.decode([JSONValue].self) {
      self = .array(v)
    } else {
      self = .object(try c.decode([String: JSONValue].self))
    }
  }

  static func load(_ relative: String) throws -> JSONValue {
    try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: Fixtures.url(relative)))
  }

  subscript(_ key: String) -> JSONValue? {
    if case .object(let o) = self { return o[key] }
    return nil
  }

  var keys: [String] {
    if case .object(let o) = self { return Array(o.keys) }
    return []
  }

  /// The value itself when it is an object.
  var object: JSONValue? {
    if case .object = self { return self }
    return nil
  }

  var array: [JSONValue]? {
    if case .array(let a) = self { return a }
    return nil
  }

  /// Any number (integers included).
  var double: Double? {
    switch self {
    case .int(let v): Double(v)
    case .double(let v): v
    default: nil
    }
  }

  /// An integer, also when written as 598.0.
  var int: Int? {
    switch self {
    case .int(let v): v
    case .double(let v): v == v.rounded() ? Int(v) : nil
    default: nil
    }
  }

  var string: String? {
    if case .string(let v) = self { return v }
    return nil
  }

  var bool: Bool? {
    if case .bool(let v) = self { return v }
    return nil
  }

  var doubles: [Double]? {
    array.flatMap { a in a.compactMap(\.double).count == a.count ? a.compactMap(\.double) : nil }
  }
  var ints: [Int]? {
    array.flatMap { a in a.compactMap(\.int).count == a.count ? a.compactMap(\.int) : nil }
  }
  var strings: [String]? {
    array.flatMap { a in a.compactMap(\.string).count == a.count ? a.compactMap(\.string) : nil }
  }
  var bools: [Bool]? {
    array.flatMap { a in a.compactMap(\.bool).count == a.count ? a.compactMap(\.bool) : nil }
  }

  /// Requires a value, failing the test with `what` when it is missing or of another type.
  func require<T>(_ path: KeyPath<JSONValue, T?>, _ what: String) throws -> T {
    try #require(self[keyPath: path], "fixture: \(what)")
  }
}

extension Optional where Wrapped == JSONValue {
  subscript(_ key: String) -> JSONValue? { self?[key] }

  func require<T>(_ path: KeyPath<JSONValue, T?>, _ what: String) throws -> T {
    let value = try #require(self, "fixture: missing \(what)")
    return try value.require(path, what)
  }
}
