import EVLoadTest
import EVServer
import Foundation
import HummingbirdTesting
import Testing

#if canImport(Glibc)
  import Glibc
#endif

extension ServerTests {
  /// The connection guards over loopback: a header timeout against clients that trickle
  /// their request heads, and a cap on open connections.
  @Suite struct ConnectionGuardTests {
    /// A non-blocking loopback socket the test drives byte by byte and watches for the
    /// server's close.
    final class RawConnection {
      let fd: Int32
      let opened = ContinuousClock.now
      private(set) var closedAt: ContinuousClock.Instant?

      init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket(): \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let result = withUnsafePointer(to: &address) {
          $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
          }
        }
        guard result == 0 else {
          close(fd)
          throw TestFailure("connect(): \(errno)")
        }
      }

      deinit { close(fd) }

      /// True once the server has closed its side (a read returns end of file or a reset).
      var isClosedByServer: Bool {
        if closedAt != nil { return true }
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, 0) > 0 else { return false }
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_DONTWAIT))
        // Bytes (an answer) would mean the server replied instead of closing; the tests
        // send nothing that completes a request, so any readable state here is the close.
        if n <= 0 {
          closedAt = .now
          return true
        }
        return false
      }

      /// Sends `text` unless the server has closed (no SIGPIPE: MSG_NOSIGNAL).
      func send(_ text: String) {
        guard !isClosedByServer else { return }
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes {
          Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
        }
      }
    }

    /// Connections that trickle a request head, a byte every 100 ms, are closed once the
    /// header timeout passes; a normal request, and a keep-alive connection that waits longer
    /// than the header timeout between requests, still work.
    @Test func tricklingHeadsAreClosedAfterTheHeaderTimeout() async throws {
      try await TestServer.withClient(
        .live, TestServer.configuration { $0.headerTimeout = .seconds(1) }
      ) { client, service in
        let port = try #require(client.port)
        let keepAlive = try LoopbackHTTPConnection(host: "127.0.0.1", port: port)
        #expect(try keepAlive.request("GET", "/v1/health").status == 200)

        let slow = try (0..<40).map { _ in try RawConnection(port: port) }
        for connection in slow { connection.send("GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ") }
        let end = ContinuousClock.now + .seconds(8)
        while ContinuousClock.now < end, !slow.allSatisfy(\.isClosedByServer) {
          for connection in slow { connection.send("a") }
          try await Task.sleep(for: .milliseconds(100))
        }
        let lifetimes = slow.map { ($0.closedAt ?? .now) - $0.opened }
        let allClosed = slow.allSatisfy(\.isClosedByServer)
        #expect(allClosed, "some trickling connections stayed open")
        // The timer is exact to the event loop's tick; the margin is for a busy machine.
        #expect(
          lifetimes.allSatisfy { $0 >= .milliseconds(900) && $0 < .seconds(4) }, "\(lifetimes)")
        #expect(service.connections.stats.headerTimeouts >= slow.count)

        // Idle for longer than the header timeout, then a whole request: the idle timeout
        // governs the wait between requests, not the header timeout.
        try await Task.sleep(for: .milliseconds(1500))
        #expect(try keepAlive.request("GET", "/v1/health").status == 200)
        let fresh = try LoopbackHTTPConnection(host: "127.0.0.1", port: port)
        #expect(try fresh.request("GET", "/v1/models").status == 200)
      }
    }

    /// Over the cap, a new connection is closed at once; below it again, connections work.
    @Test func connectionsOverTheCapAreRefused() async throws {
      let limit = 8
      try await TestServer.withClient(
        .live, TestServer.configuration { $0.maxConnections = limit }
      ) { client, service in
        let port = try #require(client.port)
        // The test client may hold connections of its own: fill what is left.
        let health = try await client.execute(uri: "/v1/health", method: .get)
        #expect(health.status == .ok)
        let already = service.connections.stats.open
        #expect(already < limit)
        var held = try (0..<(limit - already)).map { _ in try RawConnection(port: port) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(!held.contains { $0.isClosedByServer }, "connections within the cap were closed")

        let extra = try (0..<5).map { _ in try RawConnection(port: port) }
        let end = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < end, !extra.allSatisfy(\.isClosedByServer) {
          try await Task.sleep(for: .milliseconds(20))
        }
        let extraClosed = extra.allSatisfy(\.isClosedByServer)
        #expect(extraClosed, "connections over the cap stayed open")
        #expect(extra.allSatisfy { ($0.closedAt ?? .now) - $0.opened < .seconds(2) })
        #expect(service.connections.stats.refused >= extra.count)
        #expect(!held.contains { $0.isClosedByServer })

        // One held connection goes; a new one is served.
        held.removeLast()
        let freed = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < freed, service.connections.stats.open >= limit {
          try await Task.sleep(for: .milliseconds(20))
        }
        let connection = try LoopbackHTTPConnection(host: "127.0.0.1", port: port)
        let answer = try connection.request("GET", "/v1/health")
        #expect(answer.status == 200)
        let stats = try JSONDecoder().decode(HealthResponse.self, from: Data(answer.body))
        #expect(stats.connections?.limit == limit)
      }
    }
  }
}
