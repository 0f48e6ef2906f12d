import EVCheckpoint
import EVTensor
import Foundation

/// Everything `--resume` needs to continue a run exactly where it stopped: the model's
/// tensors, AdamW's moments and step, the step count, both random streams (the trainer's and
/// the data's), the position in the run's stream of images, and the run's settings.
///
/// Stored as two files in the run's folder: `state.safetensors` (the tensors: `param/<key>`,
/// `adam.m/<key>`, `adam.v/<key>`) and `state.json` (the scalars). Each is written whole
/// under a temporary name and renamed into place; both carry the same `save_id`, so a pair
/// torn apart by a crash between the two renames is recognised.
package struct RunState<Settings: Codable & Sendable>: Sendable {
  package static var tensorsFile: String { "state.safetensors" }
  package static var scalarsFile: String { "state.json" }

  package var settings: Settings
  package var trainer: Trainer.State
  /// The data stream's generator (mask choice, flips, prompts).
  package var dataRNG: SplitMix64
  /// Images taken from the run's stream so far (`EpochOrder` position).
  package var imagesSeen: Int

  package init(
    settings: Settings, trainer: Trainer.State, dataRNG: SplitMix64, imagesSeen: Int
  ) {
    self.settings = settings
    self.trainer = trainer
    self.dataRNG = dataRNG
    self.imagesSeen = imagesSeen
  }

  private struct Scalars: Codable {
    var format = 1
    var saveID: String
    var step: Int
    var imagesSeen: Int
    var optimizerStep: Int
    /// Generator states as 16 hex digits (JSON numbers lose bits above 2⁵³ in many readers).
    var trainerRNG: String
    var dataRNG: String
    var settings: Settings

    enum CodingKeys: String, CodingKey {
      case format
      case saveID = "save_id"
      case step
      case imagesSeen = "images_seen"
      case optimizerStep = "optimizer_step"
      case trainerRNG = "trainer_rng"
      case dataRNG = "data_rng"
      case settings
    }
  }

  /// The two files' contents; `saveID` ties them together.
  package func encoded(saveID: String) throws(CheckpointError) -> (tensors: Data, scalars: Data) {
    var tensors: [String: Tensor] = [:]
    for (key, value) in trainer.parameters { tensors["param/" + key] = value }
    for (key, m) in trainer.firstMoment {
      tensors["adam.m/" + key] = Tensor(shape: [m.count], storage: m)
    }
    for (key, v) in trainer.secondMoment {
      tensors["adam.v/" + key] = Tensor(shape: [v.count], storage: v)
    }
    let data = try SafeTensors.encode(tensors, metadata: ["save_id": saveID])
    let scalars = Scalars(
      saveID: saveID, step: trainer.step, imagesSeen: imagesSeen,
      optimizerStep: trainer.optimizerStep, trainerRNG: hex16(trainer.rng.state),
      dataRNG: hex16(dataRNG.state), settings: settings)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    // A Codable struct of numbers and strings always encodes.
    let json = try! encoder.encode(scalars)
    return (data, json + Data("\n".utf8))
  }

  /// Reads the state saved in `folder`.
  package static func read(from folder: URL) throws(TrainingStateError) -> RunState {
    let jsonURL = folder.appendingPathComponent(scalarsFile)
    let tensorsURL = folder.appendingPathComponent(tensorsFile)
    guard FileManager.default.fileExists(atPath: jsonURL.path) else {
      throw TrainingStateError("\(folder.path) has no saved training state (\(scalarsFile))")
    }
    let scalars: Scalars
    do {
      scalars = try JSONDecoder().decode(Scalars.self, from: Data(contentsOf: jsonURL))
    } catch {
      throw TrainingStateError("\(jsonURL.path) is not a training state: \(error)")
    }
    guard scalars.format == 1 else {
      throw TrainingStateError("\(jsonURL.path): unknown state format \(scalars.format)")
    }
    guard let trainerRNG = UInt64(scalars.trainerRNG, radix: 16),
      let dataRNG = UInt64(scalars.dataRNG, radix: 16)
    else {
      throw TrainingStateError("\(jsonURL.path): a generator state is not 16 hex digits")
    }
    let tensors: [String: Tensor]
    let metadata: [String: String]
    do {
      let loaded = try LoadedCheckpoint(contentsOf: tensorsURL)
      tensors = loaded.tensors
      metadata = loaded.metadata
    } catch {
      throw TrainingStateError(error.description)
    }
    guard metadata["save_id"] == scalars.saveID else {
      throw TrainingStateError(
        "\(tensorsURL.path) and \(jsonURL.path) are from different saves (a save was cut short); "
          + "the run cannot be resumed from them")
    }
    var parameters: [String: Tensor] = [:]
    var first: [String: [Float]] = [:]
    var second: [String: [Float]] = [:]
    for (key, value) in tensors {
      if key.hasPrefix("param/") {
        parameters[String(key.dropFirst(6))] = value
      } else if key.hasPrefix("adam.m/") {
        first[String(key.dropFirst(7))] = value.storage
      } else if key.hasPrefix("adam.v/") {
        second[String(key.dropFirst(7))] = value.storage
      }
    }
    let trainer = Trainer.State(
      parameters: parameters, step: scalars.step, rng: SplitMix64(state: trainerRNG),
      optimizerStep: scalars.optimizerStep, firstMoment: first, secondMoment: second)
    return RunState(
      settings: scalars.settings, trainer: trainer, dataRNG: SplitMix64(state: dataRNG),
      imagesSeen: scalars.imagesSeen)
  }
}

/// The state of an `evsam train` run.
package typealias TrainingState = RunState<RunSettings>

/// The state of an `evsam distill` run (its trainer state holds the encoder's tensors only).
package typealias DistillationState = RunState<DistillationSettings>

/// A saved state that cannot be used, in one line naming the file.
package struct TrainingStateError: Error, CustomStringConvertible, Equatable {
  package let description: String
  package init(_ description: String) { self.description = description }
}
