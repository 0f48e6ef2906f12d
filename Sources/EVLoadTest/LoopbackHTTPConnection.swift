import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A minimal blocking HTTP/1.1 client over one keep-alive TCP connection, for the load test
/// and the tests: no TLS, no redirects, bodies framed by `Content-Length` (as this server
/// sends them). It talks to loopback addresses only, the one place a load may be sent.
public final class LoopbackHTTPConnection {
  public struct Failure: Error, CustomStringConvertible {
    public let description: String
  }

  public struct Response: Sendable {
    public var status: Int
    /// Header names in lower case.
    public var headers: [String: String]
    public var body: [UInt8]
  }

  private let fd: Int32
  private var buffer: [UInt8] = []
  public private(set) var isOpen = true

  /// True for 127.0.0.0/8, ::1 and "localhost".
  public static func isLoopback(_ host: String) -> Bool {
    if host == "localhost" || host == "::1" || host == "[::1]" { return true }
    let parts = host.split(separator: ".")
    return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
  }

  /// Connects to `host:port`; `timeout` bounds every later read and write.
  public init(host: String, port: Int, timeout: Duration = .seconds(60)) throws {
    guard Self.isLoopback(host) else {
      throw Failure(
        description: "\(host) is not a loopback address; this client only talks to this machine")
    }
    let name =
      host == "localhost"
      ? "127.0.0.1" : host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
    let v6 = name.contains(":")
    #if canImport(Glibc)
      let stream = Int32(SOCK_STREAM.rawValue)
    #else
      let stream = SOCK_STREAM
    #endif
    fd = socket(v6 ? AF_INET6 : AF_INET, stream, 0)
    guard fd >= 0 else {
      throw Failure(description: "socket(): \(String(cString: strerror(errno)))")
    }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    let seconds = timeout.components.seconds
    var tv = timeval(
      tv_sec: Int(seconds), tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    let result: Int32
    if v6 {
      var address = sockaddr_in6()
      address.sin6_family = sa_family_t(AF_INET6)
      address.sin6_port = in_port_t(UInt16(port).bigEndian)
      inet_pton(AF_INET6, name, &address.sin6_addr)
      result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
        }
      }
    } else {
      var address = sockaddr_in()
      address.sin_family = sa_family_t(AF_INET)
      address.sin_port = in_port_t(UInt16(port).bigEndian)
      inet_pton(AF_INET, name, &address.sin_addr)
      result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
      }
    }
    guard result == 0 else {
      let message = String(cString: strerror(errno))
      close(fd)
      throw Failure(description: "cannot connect to \(host):\(port): \(message)")
    }
  }

  deinit {
    close(fd)
  }

  /// Sends a request and reads its response.
  public func request(
    _ method: String, _ path: String, headers: [String: String] = [:], body: [UInt8] = []
  ) throws -> Response {
    var head = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nContent-Length: \(body.count)\r\n"
    for (name, value) in headers { head += "\(name): \(value)\r\n" }
    head += "\r\n"
    try send(Array(head.utf8) + body)
    return try readResponse()
  }

  /// Writes raw bytes (a test may send part of a request and stall).
  public func send(_ bytes: [UInt8]) throws {
    var sent = 0
    while sent < bytes.count {
      let n = bytes[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
      guard n > 0 else {
        isOpen = false
        throw Failure(description: "write failed: \(String(cString: strerror(errno)))")
      }
      sent += n
    }
  }

  /// Reads one response (status line, headers, `Content-Length` body).
  public func readResponse() throws -> Response {
    let separator: [UInt8] = [13, 10, 13, 10]
    var headerEnd: Int?
    while headerEnd == nil {
      headerEnd = Self.find(separator, in: buffer)
      if headerEnd == nil { try fill() }
    }
    let end = headerEnd!
    let lines = String(decoding: buffer[..<end], as: UTF8.self).components(separatedBy: "\r\n")
    buffer.removeFirst(end + 4)
    let statusParts = lines[0].split(separator: " ")
    guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
      throw Failure(description: "malformed status line: \(lines[0])")
    }
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
      guard let colon = line.firstIndex(of: ":") else { continue }
      headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
        in: .whitespaces)
    }
    let length = Int(headers["content-length"] ?? "0") ?? 0
    while buffer.count < length { try fill() }
    let body = Array(buffer[..<length])
    buffer.removeFirst(length)
    if headers["connection"]?.lowercased() == "close" { isOpen = false }
    return Response(status: status, headers: headers, body: body)
  }

  private func fill() throws {
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else {
      isOpen = false
      throw Failure(
        description: n == 0
          ? "the server closed the connection" : "read failed: \(String(cString: strerror(errno)))")
    }
    buffer += chunk[..<n]
  }

  private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
    guard haystack.count >= needle.count else { return nil }
    for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
      if haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
    }
    return nil
  }
}
