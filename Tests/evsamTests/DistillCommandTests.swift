import EVCheckpoint
import EVModel
import EVTensor
import Foundation
import TestSupport
import Testing

/// `evsam embed` over a folder (the teacher cache) and `evsam distill` from it or from the
/// teacher model, on the fixtures; `--model sam-vit-*` on the commands that take a model.
@Suite struct DistillCommandTests {
  static func teacherArguments() throws -> [String] {
    [
      "--config", try Fixtures.url("sam/models/tiny-sam-vit.json").path,
      "--checkpoint", try Fixtures.url("sam/models/tiny-sam-vit.pth").path,
    ]
  }

  @Test func embedsAFolderInShardsThenDistilsFromTheCache() throws {
    let root = try temporaryDirectory()
    let cache = root.appendingPathComponent("teacher")
    let images = try Fixtures.url("images").path
    for shard in ["1/2", "0/2", "0/1"] {
      let result = try CLIRunner.run(
        ["embed"] + Self.teacherArguments() + [images, "-o", cache.path, "--shard", shard])
      #expect(result.status == 0, "\(result.stderr)")
    }
    let names = try FileManager.default.contentsOfDirectory(atPath: cache.path).sorted()
    #expect(
      names == [
        "astronaut.png.safetensors", "chelsea.png.safetensors", "coffee.jpg.safetensors",
        "coffee.png.safetensors", "teacher.json",
      ])
    let embedding = try SafeTensors.read(
      contentsOf: cache.appendingPathComponent("coffee.png.safetensors"))
    let golden = try SafeTensors.read(
      contentsOf: Fixtures.url("sam/golden/tiny-sam-vit__coffee.safetensors"))
    #expect(relativeL2Error(embedding["image_embeddings"]!, golden["embedding"]!) < 1e-4)

    // Another teacher's embeddings never join the folder.
    let models = try Fixtures.url("models")
    let other = try CLIRunner.run([
      "embed", "--config", models.appendingPathComponent("tiny-l.json").path, "--checkpoint",
      models.appendingPathComponent("tiny-l.pt").path, images, "-o", cache.path,
    ])
    #expect(other.status != 0)
    #expect(other.stderr.contains("another teacher"), "\(other.stderr)")

    let out = root.appendingPathComponent("student")
    let student = [
      "distill", "--config", models.appendingPathComponent("tiny-l.json").path,
      "--checkpoint", models.appendingPathComponent("tiny-l.pt").path,
      "--teacher-embeddings", cache.path, "--images", images, "--lr", "3e-3",
    ]
    let result = try CLIRunner.run(student + ["--steps", "8", "-o", out.path])
    #expect(result.status == 0, "\(result.stderr)")
    let config = try ModelConfig.load(json: models.appendingPathComponent("tiny-l.json"))
    _ = try EfficientViTSAM.load(config: config, checkpoint: out.appendingPathComponent("model.pt"))
    let log = try String(contentsOf: out.appendingPathComponent("log.jsonl"), encoding: .utf8)
    #expect(log.split(separator: "\n").count == 8)
    for file in ["loss.png", "state.json", "model.safetensors"] {
      #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent(file).path))
    }
    #expect(FileManager.default.fileExists(atPath: try TrainCommandTests.stateTensors(out).path))
    // Finished runs say so; other settings are refused on resume.
    let again = try CLIRunner.run(student + ["--steps", "8", "--resume", out.path])
    #expect(again.status == 0 && again.stderr.contains("already complete"), "\(again.stderr)")
    let changed = try CLIRunner.run(
      student + ["--steps", "9", "--lr", "1e-3", "--resume", out.path])
    #expect(changed.status != 0 && changed.stderr.contains("--lr"), "\(changed.stderr)")
  }

  @Test func distilsFromTheTeacherModelIntoARandomStudent() throws {
    let out = try temporaryDirectory().appendingPathComponent("student")
    let models = try Fixtures.url("models")
    let result = try CLIRunner.run([
      "distill", "--config", models.appendingPathComponent("tiny-l.json").path,
      "--teacher-config", try Fixtures.url("sam/models/tiny-sam-vit.json").path,
      "--teacher-checkpoint", try Fixtures.url("sam/models/tiny-sam-vit.pth").path,
      "--images", try Fixtures.url("images").path, "--steps", "2", "-o", out.path,
    ])
    #expect(result.status == 0, "\(result.stderr)")
    // Without --checkpoint the student keeps the teacher's prompt encoder and mask decoder.
    let student = try Checkpoint.load(contentsOf: out.appendingPathComponent("model.pt"))
    let teacher = try Checkpoint.load(contentsOf: Fixtures.url("sam/models/tiny-sam-vit.pth"))
    for key in student.keys where !key.hasPrefix("image_encoder.") {
      #expect(student[key] == teacher[key], "\(key)")
    }
  }

  @Test func refusesUnclearTeachersAndSamStudents() throws {
    let images = try Fixtures.url("images").path
    let noTeacher = try CLIRunner.run([
      "distill", "--model", "l0", "--images", images, "-o", "/tmp/x",
    ])
    #expect(noTeacher.status != 0 && noTeacher.stderr.contains("give the teacher"))
    let samStudent = try CLIRunner.run(
      [
        "distill", "--model", "sam-vit-b", "--teacher-embeddings", "/nonexistent", "--images",
        images, "-o", try temporaryDirectory().path,
      ])
    #expect(
      samStudent.status != 0 && samStudent.stderr.contains("for EfficientViT-SAM models"),
      "\(samStudent.stderr)")
  }

  @Test func infoKnowsSamModels() throws {
    let result = try CLIRunner.run(["info", "--model", "sam-vit-h"])
    #expect(result.status == 0, "\(result.stderr)")
    #expect(result.stdout.contains("641,090,608"))
    #expect(result.stdout.contains("32 blocks × 1280 channels"))
    let checked = try CLIRunner.run(["info"] + Self.teacherArguments())
    #expect(checked.status == 0 && checked.stdout.contains("OK"), "\(checked.stdout)")
  }
}
