import EVTensor
import EVTraining
import Foundation
import Testing

/// The training state's files: a save replaces the previous one only once it is whole, so a
/// process killed at any moment of a save leaves a state that resumes.
@Suite struct RunStateFileTests {
  static func state(step: Int, value: Float) -> TrainingState {
    let settings = RunSettings(
      steps: 10, batchSize: 1, microBatches: 2, lr: 1e-4, warmupSteps: 0, masksPerImage: 4,
      prompts: .mixed, frozen: [], seed: 1, validationFraction: 0, imageSize: 64,
      weights: "w", data: "d")
    let trainer = Trainer.State(
      parameters: ["p": Tensor(shape: [3], storage: [value, 2, 3])], step: step,
      rng: SplitMix64(seed: 9), optimizerStep: step, firstMoment: ["p": [0.5, 0, 0]],
      secondMoment: ["p": [0.25, 0, 0]])
    return TrainingState(settings: settings, trainer: trainer, imagesSeen: step * 2)
  }

  static func folder() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent(
      "evsam-state-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
  }

  static func stateFiles(_ folder: URL) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: folder.path).filter {
      $0.hasPrefix("state")
    }.sorted()
  }

  @Test func aSaveCutShortLeavesThePreviousStateAndTheNextSaveClearsIt() throws {
    let folder = try Self.folder()
    defer { try? FileManager.default.removeItem(at: folder) }
    try Self.state(step: 1, value: 1).write(to: folder, saveID: "1-a")
    try Self.state(step: 2, value: 7).write(to: folder, saveID: "2-b")
    #expect(try Self.stateFiles(folder) == ["state-2-b.safetensors", "state.json"])

    // A later save killed after its tensors were written, before state.json was replaced.
    let cut = try Self.state(step: 3, value: 9).encoded(saveID: "3-c")
    try cut.tensors.write(to: folder.appendingPathComponent("state-3-c.safetensors"))
    let read = try TrainingState.read(from: folder)
    #expect(read.trainer.step == 2 && read.imagesSeen == 4)
    #expect(read.trainer.parameters["p"]?.storage == [7, 2, 3])
    #expect(read.trainer.firstMoment["p"] == [0.5, 0, 0])
    #expect(read.settings == Self.state(step: 2, value: 7).settings)

    try Self.state(step: 4, value: 4).write(to: folder, saveID: "4-d")
    #expect(try Self.stateFiles(folder) == ["state-4-d.safetensors", "state.json"])
    #expect(try TrainingState.read(from: folder).trainer.step == 4)
  }

  @Test func filesFromDifferentSavesOrAnEarlierFormatAreRefused() throws {
    let folder = try Self.folder()
    defer { try? FileManager.default.removeItem(at: folder) }
    try Self.state(step: 1, value: 1).write(to: folder, saveID: "1-a")
    // Tensors of another save under the name state.json gives.
    let other = try Self.state(step: 5, value: 5).encoded(saveID: "5-e")
    try other.tensors.write(to: folder.appendingPathComponent("state-1-a.safetensors"))
    #expect {
      try TrainingState.read(from: folder)
    } throws: { ($0 as? TrainingStateError)?.description.contains("different saves") == true }

    let json = folder.appendingPathComponent("state.json")
    try Data(#"{"format": 1, "save_id": "x"}"#.utf8).write(to: json)
    #expect {
      try TrainingState.read(from: folder)
    } throws: { ($0 as? TrainingStateError)?.description.contains("earlier evsam") == true }
  }
}
