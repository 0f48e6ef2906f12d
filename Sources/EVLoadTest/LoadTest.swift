import EVTensor
import Foundation
import Synchronization

/// A bounded load on a running server over loopback: `clients` connections each send segment
/// requests with random clicks on one cached image for `duration`, one after another.
public enum LoadTest {
  public struct Options: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// The image to upload and click on (PNG or JPEG bytes).
    public var image: [UInt8] = []
    public var clients = 16
    public var duration: Duration = .seconds(30)
    public var multimask = true
    /// Seeds the clicks, so runs are comparable.
    public var seed: UInt64 = 1

    public init() {}

    /// The bounds a run must stay within: this is a load on this machine, not a flood.
    public func problems() -> [String] {
      var found: [String] = []
      if !LoopbackHTTPConnection.isLoopback(host) {
        found.append("\(host) is not a loopback address: the load test only targets this machine")
      }
      if !(1...256).contains(clients) { found.append("clients must be 1…256, got \(clients)") }
      if duration <= .zero || duration > .seconds(600) {
        found.append("the duration must be more than 0 and at most 600 s")
      }
      if image.isEmpty { found.append("no image to upload") }
      return found
    }
  }

  public struct Report: Sendable, Codable {
    public var clients: Int
    public var durationS: Double
    public var requests: Int
    public var errors: Int
    /// Error count by HTTP status (or "connection" for transport failures).
    public var errorKinds: [String: Int]
    public var throughputPerS: Double
    public var latencyMs: [String: Double]
    public var encodeMs: Double
    public var imageSize: [Int]
    public var rssBeforeBytes: Int
    public var rssAfterBytes: Int
    public var cacheBytes: Int
    public var cacheLimitBytes: Int

    enum CodingKeys: String, CodingKey {
      case clients, requests, errors
      case durationS = "duration_s"
      case errorKinds = "error_kinds"
      case throughputPerS = "throughput_per_s"
      case latencyMs = "latency_ms"
      case encodeMs = "encode_ms"
      case imageSize = "image_size"
      case rssBeforeBytes = "rss_before_bytes"
      case rssAfterBytes = "rss_after_bytes"
      case cacheBytes = "cache_bytes"
      case cacheLimitBytes = "cache_limit_bytes"
    }

    /// Resident memory growth over the run.
    public var rssGrowthBytes: Int { rssAfterBytes - rssBeforeBytes }

    public var summary: String {
      func mib(_ b: Int) -> String { String(format: "%.1f MiB", Double(b) / 1_048_576) }
      let l = latencyMs
      return """
        \(requests) segment requests from \(clients) clients in \(String(format: "%.1f", durationS)) s \
        (\(String(format: "%.1f", throughputPerS))/s), errors: \(errors)\
        \(errorKinds.isEmpty ? "" : " \(errorKinds.sorted { $0.key < $1.key })")
        latency ms: p50 \(format(l["p50"])), p90 \(format(l["p90"])), p99 \(format(l["p99"])), \
        max \(format(l["max"])), mean \(format(l["mean"]))
        image \(imageSize[1])×\(imageSize[0]) encoded in \(format(encodeMs)) ms
        server RSS: before \(mib(rssBeforeBytes)), after \(mib(rssAfterBytes)), \
        growth \(mib(rssGrowthBytes)); cache \(mib(cacheBytes)) of \(mib(cacheLimitBytes))
        """
    }

    private func format(_ v: Double?) -> String { v.map { String(format: "%.1f", $0) } ?? "-" }
  }

  public struct Failure: Error, CustomStringConvertible {
    public let description: String
  }

  /// Runs the load; throws when the server cannot be reached or the upload fails (request
  /// errors during the run are counted, not thrown).
  public static func run(_ options: Options) throws -> Report {
    let problems = options.problems()
    guard problems.isEmpty else { throw Failure(description: problems.joined(separator: "; ")) }
    let control = try LoopbackHTTPConnection(host: options.host, port: options.port)
    let upload = try control.request(
      "POST", "/v1/images", headers: ["Content-Type": "application/octet-stream"],
      body: options.image)
    guard upload.status == 201,
      let info = try? JSONDecoder().decode(UploadAnswer.self, from: Data(upload.body))
    else {
      throw Failure(
        description:
          "upload failed with status \(upload.status): \(String(decoding: upload.body, as: UTF8.self))"
      )
    }
    // One request first, so that lazily built state is not counted as growth.
    let path = "/v1/images/\(info.id)/segment"
    let warm = try control.request(
      "POST", path, headers: ["Content-Type": "application/json"],
      body: body(
        x: Double(info.width) / 2, y: Double(info.height) / 2, multimask: options.multimask))
    guard warm.status == 200 else {
      throw Failure(description: "the first segment request failed with status \(warm.status)")
    }
    let before = try health(control, as: ServerHealth.self)

    let results = Mutex<(latencies: [Double], errors: [String: Int])>(([], [:]))
    let start = ContinuousClock.now
    let end = start + options.duration
    let group = DispatchGroup()
    for client in 0..<options.clients {
      group.enter()
      let thread = Thread {
        defer { group.leave() }
        var random = SplitMix64(seed: options.seed &+ UInt64(client) &* 0x9E37_79B9)
        var latencies: [Double] = []
        var errors: [String: Int] = [:]
        var connection: LoopbackHTTPConnection?
        while ContinuousClock.now < end {
          let x = Double(random.next() % UInt64(info.width * 10)) / 10
          let y = Double(random.next() % UInt64(info.height * 10)) / 10
          let t0 = ContinuousClock.now
          do {
            if connection == nil || connection?.isOpen == false {
              connection = try LoopbackHTTPConnection(host: options.host, port: options.port)
            }
            let response = try connection!.request(
              "POST", path, headers: ["Content-Type": "application/json"],
              body: body(x: x, y: y, multimask: options.multimask))
            if response.status == 200 {
              latencies.append((ContinuousClock.now - t0).seconds * 1000)
            } else {
              errors["\(response.status)", default: 0] += 1
            }
          } catch {
            errors["connection", default: 0] += 1
            connection = nil
          }
        }
        let (l, e) = (latencies, errors)
        results.withLock { r in
          r.latencies += l
          r.errors.merge(e, uniquingKeysWith: +)
        }
      }
      thread.start()
    }
    group.wait()
    let elapsed = (ContinuousClock.now - start).seconds
    let after = try health(control, as: ServerHealth.self)

    let (latencies, errors) = results.withLock { ($0.latencies.sorted(), $0.errors) }
    func percentile(_ p: Double) -> Double {
      guard !latencies.isEmpty else { return 0 }
      let rank = Int((p / 100 * Double(latencies.count)).rounded(.up)) - 1
      return latencies[min(max(rank, 0), latencies.count - 1)]
    }
    let errorCount = errors.values.reduce(0, +)
    return Report(
      clients: options.clients, durationS: elapsed, requests: latencies.count + errorCount,
      errors: errorCount, errorKinds: errors,
      throughputPerS: Double(latencies.count + errorCount) / elapsed,
      latencyMs: [
        "p50": percentile(50), "p90": percentile(90), "p99": percentile(99),
        "max": latencies.last ?? 0,
        "mean": latencies.isEmpty ? 0 : latencies.reduce(0, +) / Double(latencies.count),
      ],
      encodeMs: info.encodeMs, imageSize: [info.height, info.width],
      rssBeforeBytes: before.rssBytes, rssAfterBytes: after.rssBytes,
      cacheBytes: after.cache.bytes, cacheLimitBytes: after.cache.limitBytes)
  }

  static func body(x: Double, y: Double, multimask: Bool) -> [UInt8] {
    Array(#"{"points":[[\#(x),\#(y)]],"labels":[1],"multimask":\#(multimask)}"#.utf8)
  }

  /// `GET /v1/health`, decoded as `type` (the server's `HealthResponse`, or a part of it).
  public static func health<Health: Decodable>(
    _ connection: LoopbackHTTPConnection, as type: Health.Type
  ) throws -> Health {
    let response = try connection.request("GET", "/v1/health")
    guard response.status == 200,
      let health = try? JSONDecoder().decode(type, from: Data(response.body))
    else {
      throw Failure(description: "GET /v1/health failed with status \(response.status)")
    }
    return health
  }
}

/// What the load test reads of the server's answer to an upload (the API's `ImageResponse`).
private struct UploadAnswer: Decodable {
  var id: String
  var width: Int
  var height: Int
  var encodeMs: Double

  enum CodingKeys: String, CodingKey {
    case id, width, height
    case encodeMs = "encode_ms"
  }
}

/// What the load test reads of `GET /v1/health` (the API's `HealthResponse`).
public struct ServerHealth: Decodable, Sendable {
  public struct Cache: Decodable, Sendable {
    public var bytes: Int
    public var limitBytes: Int

    enum CodingKeys: String, CodingKey {
      case bytes
      case limitBytes = "limit_bytes"
    }
  }

  public var rssBytes: Int
  public var cache: Cache

  enum CodingKeys: String, CodingKey {
    case cache
    case rssBytes = "rss_bytes"
  }
}
