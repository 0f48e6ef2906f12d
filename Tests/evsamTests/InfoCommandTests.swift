import Foundation
import TestSupport
import Testing

@Suite struct InfoCommandTests {
  @Test(arguments: [
    ("l0", "34,792,784"), ("efficientvit-sam-l1", "47,650,128"), ("l2", "61,328,592"),
    ("xl0", "116,957,904"), ("xl1", "203,346,128"),
  ])
  func printsParameterCountsAndMACs(model: String, total: String) throws {
    let result = try CLIRunner.run(["info", "--model", model])
    #expect(result.status == 0, "\(result.stderr)")
    let totalLine = try #require(
      result.stdout.split(separator: "\n").first { $0.hasPrefix("  total") && $0.contains(",") })
    #expect(totalLine.contains(total))
    #expect(result.stdout.contains("multiply-accumulates"))
    #expect(result.stdout.contains("(paper: "))
  }

  @Test func verifiesAMatchingCheckpoint() throws {
    let models = try Fixtures.url("models")
    let result = try CLIRunner.run([
      "info", "--config", models.appendingPathComponent("tiny-l.json").path,
      "--checkpoint", models.appendingPathComponent("tiny-l.pt").path,
    ])
    #expect(result.status == 0, "\(result.stderr)")
    #expect(result.stdout.contains("OK — all 327 keys match"))
  }

  @Test func reportsEveryProblemOfAMismatchedCheckpoint() throws {
    let models = try Fixtures.url("models")
    let result = try CLIRunner.run([
      "info", "--model", "l0", "--checkpoint", models.appendingPathComponent("tiny-l.pt").path,
    ])
    #expect(result.status != 0)
    // The summary is the command's output (stdout); why the checkpoint fails is an error.
    #expect(result.stdout.contains("FAILED"))
    #expect(!result.stdout.contains("missing key"))
    #expect(result.stderr.contains("checkpoint does not match the model"))
    #expect(
      result.stderr.contains(
        "shape mismatch for image_encoder.backbone.stages.0.op_list.0.conv.weight: expected 32x3x3x3, found 8x3x3x3"
      ))
    #expect(result.stderr.contains("missing key image_encoder.backbone.stages.3.op_list.3"))
  }

  @Test func rejectsUnknownVariants() throws {
    let result = try CLIRunner.run(["info", "--model", "l9"])
    #expect(result.status != 0)
    #expect(result.stderr.contains("l9"))
  }
}
