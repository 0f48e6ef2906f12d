import Foundation
import Testing

/// `evsam bench` end to end on L0 with random weights (one run of each case), and its reading of
/// a reference JSON into ratios.
@Suite struct BenchCommandTests {
  @Test func benchmarksL0AndComparesWithAReference() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    // A reference as scripts/reference-bench writes it; the ratios must be ours / these.
    let reference: [String: Any] = [
      "models": [
        "l0": [
          "pytorch": [
            "encoder_s": ["median": 0.5, "min": 0.5], "decoder_point_ms": ["median": 50.0],
            "peak_rss_after_encode_mb": 1000.0,
          ],
          "onnxruntime": ["encoder_s": ["median": 0.25, "min": 0.25]],
        ]
      ]
    ]
    let referenceURL = dir.appendingPathComponent("reference.json")
    try JSONSerialization.data(withJSONObject: reference).write(to: referenceURL)
    let jsonURL = dir.appendingPathComponent("bench.json")
    let r = try CLIRunner.run([
      "bench", "--model", "l0", "--runs", "1", "--decoder-runs", "1", "--skip-everything",
      "--reference", referenceURL.path, "--json", jsonURL.path,
    ])
    try #require(r.status == 0, "bench failed: \(r.stderr)")

    let data = try Data(contentsOf: jsonURL)
    let document = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let results = try #require(document["results"] as? [[String: Any]])
    try #require(results.count == 1)
    let l0 = results[0]
    #expect(l0["model"] as? String == "l0")
    let encoder = try #require((l0["encoder_s"] as? [String: Any])?["median"] as? Double)
    #expect(encoder > 0)
    let gmacs = try #require(l0["encoder_gmacs"] as? Double)
    #expect(abs(gmacs - 34.775) < 0.01)
    let rss = try #require(l0["peak_rss_after_encode_mb"] as? Double)
    #expect(rss > 50)
    for key in ["decoder_prepare_ms", "decoder_point_ms", "decoder_box_ms", "decoder_batch64_ms"] {
      let median = (l0[key] as? [String: Any])?["median"] as? Double
      #expect((median ?? 0) > 0, "\(key)")
    }

    // The table holds our encoder median against both references.
    let torchRatio = String(format: "%.2f×", encoder / 0.5)
    let ortRatio = String(format: "%.2f×", encoder / 0.25)
    let row = try #require(
      r.stdout.split(separator: "\n").first { $0.contains("l0 encoder (median)") })
    #expect(row.contains(torchRatio), "\(row)")
    #expect(row.contains(ortRatio), "\(row)")
    #expect(r.stdout.contains("l0 peak RSS after encode"))
  }

  /// --with-reference against a stand-in for scripts/reference-bench/run.sh that speaks the
  /// encoder-server protocol: the encoder rows must come from the interleaved rounds, each side's
  /// server must get one request per round, and library chatter on stdout must be ignored.
  @Test func interleavesTheEncodersWithTheReferenceServers() throws {
    let dir = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let scriptDir = dir.appendingPathComponent("scripts/reference-bench")
    try FileManager.default.createDirectory(at: scriptDir, withIntermediateDirectories: true)
    let log = dir.appendingPathComponent("requests.log")
    let script = scriptDir.appendingPathComponent("run.sh")
    try """
    out=""; serve=""
    while [ $# -gt 0 ]; do
      case "$1" in --out) out="$2"; shift 2;; --serve) serve="$2"; shift 2;; *) shift;; esac
    done
    if [ -n "$serve" ]; then
      echo "a warning some library prints"
      echo "evsam-bench ready"
      t=0.5; [ "$serve" = onnxruntime ] && t=0.25
      while read -r line; do
        [ "$line" = quit ] && break
        if [ "$line" = run ]; then echo "$serve" >> "\(log.path)"; echo "evsam-bench time $t"; fi
      done
      echo "evsam-bench peak_rss_mb 1000"
      exit 0
    fi
    mkdir -p "$out"
    cat > "$out/reference.json" <<'END'
    {"models": {"l0": {"pytorch": {"encoder_s": {"median": 9.0, "min": 9.0}},
                       "onnxruntime": {"encoder_s": {"median": 9.0, "min": 9.0}}}}}
    END
    """.write(to: script, atomically: true, encoding: .utf8)
    let jsonURL = dir.appendingPathComponent("bench.json")
    let r = try CLIRunner.run([
      "bench", "--model", "l0", "--runs", "2", "--decoder-runs", "1", "--skip-everything",
      "--with-reference", "--reference-script", script.path, "--json", jsonURL.path,
    ])
    try #require(r.status == 0, "bench failed: \(r.stderr)")

    let data = try Data(contentsOf: jsonURL)
    let document = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let l0 = try #require((document["results"] as? [[String: Any]])?.first)
    let inter = try #require(l0["interleaved"] as? [String: Any])
    #expect(inter["rounds"] as? Int == 2)
    let torchRuns = (inter["pytorch"] as? [String: Any])?["runs"] as? [Double]
    #expect(torchRuns == [0.5, 0.5])
    let ortRuns = (inter["onnxruntime"] as? [String: Any])?["runs"] as? [Double]
    #expect(ortRuns == [0.25, 0.25])
    let ours = try #require((inter["evsam"] as? [String: Any])?["median"] as? Double)
    #expect(ours > 0)
    let requests = try String(contentsOf: log, encoding: .utf8).split(separator: "\n")
    #expect(requests == ["pytorch", "onnxruntime", "pytorch", "onnxruntime"])
    let oursRuns = (inter["evsam"] as? [String: Any])?["runs"] as? [Double]
    #expect(oursRuns?.count == 2)
    // Progress: one line per round with every side's pass.
    #expect(r.stderr.contains("round 2/2: "), "\(r.stderr)")
    #expect(r.stderr.contains("pytorch 0.500 s, onnxruntime 0.250 s"), "\(r.stderr)")

    // The encoder ratios in the table are against the interleaved passes (0.5 s, 0.25 s), not
    // the separately timed 9 s.
    let row = try #require(
      r.stdout.split(separator: "\n").first { $0.contains("l0 encoder, interleaved (median)") })
    #expect(row.contains(String(format: "%.2f×", ours / 0.5)), "\(row)")
    #expect(row.contains(String(format: "%.2f×", ours / 0.25)), "\(row)")
    #expect(r.stdout.contains("l0 encoder, own process (median)"))
  }

  @Test func refusesBadArguments() throws {
    let zeroRuns = try CLIRunner.run(["bench", "--model", "l0", "--runs", "0"])
    #expect(zeroRuns.status != 0)
    let both = try CLIRunner.run([
      "bench", "--model", "l0", "--with-reference", "--reference", "x.json",
    ])
    #expect(both.status != 0)
    #expect(both.stderr.contains("not both"))
    let unknown = try CLIRunner.run(["bench", "--model", "l9"])
    #expect(unknown.status != 0)
  }
}
