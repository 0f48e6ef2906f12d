import EVImage
import EVLoadTest
import EVServer
import EVTensor
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

extension ServerTests {
  /// `evsam serve` in a process of its own (so nothing else moves its resident memory) under
  /// many uploads of distinct images and a few segment-everything runs: between jobs, its
  /// resident memory must stay within its footprint at start, the cache bound, the retained
  /// heap and a fixed overhead; while jobs run, within that and the jobs' working memory.
  @Suite struct MemorySoakTests {
    static let cacheMiB = 128
    static let retainMiB = 32

    /// What resident memory may exceed start + cache bound + retained heap by between jobs:
    /// after a trim, pages that hold any live byte stay resident (small blocks of the runtime,
    /// NIO's buffers, the answers being written), and cache entries are counted by estimate
    /// (57 MiB for an image here, of which about 45 MiB are resident). Measured: at most
    /// about 20 MiB over start + resident cache entries.
    static let overheadBytes = 64 << 20

    /// What a job in flight may add while it runs: the fixture model's encode and decoder
    /// state (under 60 MiB) or a 12×12-grid segment-everything run on an image of up to
    /// 640×640 (about 150 MiB measured); not retained after it.
    static let jobBytes = 256 << 20

    /// A JPEG of `width`×`height` that no other call makes: gradients shifted by `seed` with
    /// noise, so the decoder and the encoder really work.
    static func distinctImage(width: Int, height: Int, seed: UInt64) throws -> [UInt8] {
      var generator = SeededGenerator(seed: seed)
      let shift = Int(seed % 251)
      var pixels = [UInt8](repeating: 0, count: width * height * 3)
      for y in 0..<height {
        for x in 0..<width {
          let i = 3 * (y * width + x)
          let noise = Int(generator.next() % 32)
          pixels[i] = UInt8((x + shift + noise) & 255)
          pixels[i + 1] = UInt8((y * 2 + shift) & 255)
          pixels[i + 2] = UInt8((x ^ y + noise) & 255)
        }
      }
      return [UInt8](try RGBImage(width: width, height: height, pixels: pixels).jpegData())
    }

    @Test func residentMemoryStaysWithinTheCacheBound() async throws {
      let server = try ServeProcessTests.Server(
        arguments: try ServeProcessTests.fixtureModelArguments() + [
          "--cache-mb", String(Self.cacheMiB), "--retain-heap-mb", String(Self.retainMiB),
          "--workers", "2",
        ])
      defer { _ = server.stop(SIGKILL, seconds: 5) }
      let port = server.port
      let control = try LoopbackHTTPConnection(host: "127.0.0.1", port: port)
      let start = try LoadTest.health(control, as: HealthResponse.self).rssBytes
      #expect(start > 0)
      let bound = start + (Self.cacheMiB + Self.retainMiB) << 20 + Self.overheadBytes
      let busyBound = bound + Self.jobBytes

      // Two clients upload at once (both workers encode, evict and free on their own
      // threads); every tenth upload of each runs the mask generator on it.
      let deadline = ContinuousClock.now + .seconds(45)
      let perClient = 60
      let clients = (0..<2).map { client in
        Task.detached { () throws -> (uploads: Int, everything: Int, idle: Int, busy: Int) in
          let connection = try LoopbackHTTPConnection(host: "127.0.0.1", port: port)
          var generator = SeededGenerator(seed: 1000 + UInt64(client))
          // The largest resident memory seen with no job running, and with one.
          var (uploads, everything, idle, busy) = (0, 0, 0, 0)
          while uploads < perClient && ContinuousClock.now < deadline {
            let width = 160 + Int(generator.next() % 480)
            let height = 160 + Int(generator.next() % 480)
            let image = try Self.distinctImage(
              width: width, height: height, seed: UInt64(client * perClient + uploads))
            let upload = try connection.request("POST", "/v1/images", body: image)
            guard upload.status == 201 else {
              throw TestFailure("upload answered \(upload.status)")
            }
            uploads += 1
            if uploads % 10 == 0 {
              let id = try JSONDecoder().decode(ImageResponse.self, from: Data(upload.body)).id
              let run = try connection.request(
                "POST", "/v1/images/\(id)/everything",
                headers: ["Content-Type": "application/json"],
                body: Array(
                  #"{"points_per_side": 12, "pred_iou_thresh": 0, "stability_score_thresh": 0}"#
                    .utf8))
              guard run.status == 200 else {
                throw TestFailure("everything answered \(run.status)")
              }
              everything += 1
            }
            let health = try LoadTest.health(connection, as: HealthResponse.self)
            if health.queue.running == 0 && health.queue.waiting == 0 {
              idle = max(idle, health.rssBytes)
            } else {
              busy = max(busy, health.rssBytes)
            }
          }
          return (uploads, everything, idle, busy)
        }
      }
      var results: [(uploads: Int, everything: Int, idle: Int, busy: Int)] = []
      for client in clients { results.append(try await client.value) }
      let health = try LoadTest.health(control, as: HealthResponse.self)
      let uploads = results.map(\.uploads).reduce(0, +)
      let idle = max(results.map(\.idle).max() ?? 0, health.rssBytes)
      let busy = results.map(\.busy).max() ?? 0
      let summary =
        "\(uploads) uploads, \(results.map(\.everything).reduce(0, +)) everything runs, "
        + "\(health.cache.evictions) evictions; RSS at start \(start >> 20) MiB, between jobs "
        + "at most \(idle >> 20) MiB (bound \(bound >> 20) MiB), during jobs at most "
        + "\(busy >> 20) MiB (bound \(busyBound >> 20) MiB), end \(health.rssBytes >> 20) MiB"
      print("memory soak: \(summary)")
      // Enough work that an unbounded heap would have shown: the cache turned over many times.
      #expect(uploads >= 30, "\(summary)")
      #expect(health.cache.evictions >= uploads - 3, "\(summary)")
      #expect(health.cache.bytes <= health.cache.limitBytes)
      #expect(idle <= bound, "\(summary)")
      #expect(busy <= busyBound, "\(summary)")
    }
  }
}
