import Foundation
import TestSupport
import Testing

/// `--shard auto` under each scheduler's variables, as Slurm, a Kubernetes Indexed Job and
/// mpirun set them; the share a task takes is seen in the files `evsam embed` writes for a
/// folder (the fixtures' four images, sorted: astronaut.png, chelsea.png, coffee.jpg, coffee.png).
@Suite struct ShardAutoTests {
  static func embed(_ environment: [String: String], extra: [String] = []) throws -> (
    CLIRunner.Result, [String]
  ) {
    let out = try temporaryDirectory().appendingPathComponent("cache")
    let result = try CLIRunner.run(
      [
        "embed", "--config", try Fixtures.url("sam/models/tiny-sam-vit.json").path,
        "--checkpoint", try Fixtures.url("sam/models/tiny-sam-vit.pth").path,
        try Fixtures.url("images").path, "-o", out.path, "--shard", "auto",
      ] + extra, environment: environment)
    let files =
      (try? FileManager.default.contentsOfDirectory(atPath: out.path))?
      .filter { $0.hasSuffix(".safetensors") }.sorted() ?? []
    return (result, files)
  }

  static let second = ["chelsea.png.safetensors", "coffee.png.safetensors"]
  static let first = ["astronaut.png.safetensors", "coffee.jpg.safetensors"]

  @Test(arguments: [
    // A Slurm array `--array=1-2`: task 2 is the second shard.
    ["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"],
    ["SLURM_PROCID": "1", "SLURM_NTASKS": "2"],
    ["JOB_COMPLETION_INDEX": "1", "EVSAM_SHARD_COUNT": "2"],
    ["OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"],
  ])
  func eachSchedulerGivesTheShard(environment: [String: String]) throws {
    let (result, files) = try Self.embed(environment)
    #expect(result.status == 0, "\(result.stderr)")
    #expect(files == Self.second, "\(environment): \(files)")
    #expect(result.stderr.contains("shard 1/2 from"), "\(result.stderr)")
  }

  @Test func kubernetesTakesTheCountFromTheCommandLine() throws {
    let (result, files) = try Self.embed(
      ["JOB_COMPLETION_INDEX": "0"], extra: ["--shard-count", "2"])
    #expect(result.status == 0, "\(result.stderr)")
    #expect(files == Self.first)
    let (missing, _) = try Self.embed(["JOB_COMPLETION_INDEX": "0"])
    #expect(missing.status != 0 && missing.stderr.contains("--shard-count"), "\(missing.stderr)")
  }

  @Test func withoutASchedulerItSaysWhatItLookedFor() throws {
    let (result, files) = try Self.embed([:])
    #expect(result.status != 0)
    #expect(files.isEmpty)
    for name in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "OMPI_COMM_WORLD_RANK"] {
      #expect(result.stderr.contains(name), "\(result.stderr)")
    }
    let (bad, _) = try Self.embed(["SLURM_PROCID": "3", "SLURM_NTASKS": "2"])
    #expect(bad.status != 0 && bad.stderr.contains("0 ≤ index < count"), "\(bad.stderr)")
  }

  /// `everything` over a folder and `eval` take the same shares.
  @Test func everythingAndEvalShardToo() throws {
    let root = try temporaryDirectory()
    let models = try Fixtures.url("models")
    let model = [
      "--config", models.appendingPathComponent("tiny-l.json").path, "--checkpoint",
      models.appendingPathComponent("tiny-l.pt").path,
    ]
    let env = ["SLURM_PROCID": "1", "SLURM_NTASKS": "2"]
    let everything = try CLIRunner.run(
      ["everything"] + model + [
        try Fixtures.url("images").path, "-o", root.appendingPathComponent("amg").path,
        "--points-per-side", "4", "--shard", "auto",
      ], environment: env)
    #expect(everything.status == 0, "\(everything.stderr)")
    let written = try FileManager.default.contentsOfDirectory(
      atPath: root.appendingPathComponent("amg").path
    ).filter { $0.hasSuffix(".json") }.sorted()
    #expect(written == ["chelsea.png.json", "coffee.png.json"], "\(written)")

    let report = root.appendingPathComponent("eval.json")
    let eval = try CLIRunner.run(
      ["eval"] + model + [
        "--annotations", try Fixtures.url("coco/gt.json").path, "--images",
        try Fixtures.url("images").path, "--prompt", "box", "-o", report.path, "--shard", "auto",
      ], environment: env)
    #expect(eval.status == 0, "\(eval.stderr)")
    let json = try #require(
      JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any])
    let configuration = try #require(json["configuration"] as? [String: Any])
    let shard = try #require(configuration["shard"] as? [String: Any])
    #expect(shard["index"] as? Int == 1 && shard["count"] as? Int == 2, "\(shard)")
  }
}
