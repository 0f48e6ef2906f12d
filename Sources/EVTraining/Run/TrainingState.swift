import EVCheckpoint
import EVTensor
import Foundation

/// Everything `--resume` needs to continue a run exactly where it stopped: the model's
/// tensors, AdamW's moments and step, the step count, the trainer's random stream, the
/// position in the run's stream of images (every image's draws follow from it), and the run's
/// settings.
///
/// Stored as two files in the run's folder: `state-<save id>.safetensors` (the tensors:
/// `param/<key>`, `adam.m/<key>`, `adam.v/<key>`) and `state.json` (the scalars, naming the
/// tensors' file). A save writes the new tensors under their new name, then replaces
/// `state.json` (the commit), then removes the previous tensors: a process killed at any
/// moment leaves the last complete state readable. Both files carry the same `save_id`.
package struct RunState<Settings: Codable & Sendable>: Sendable {
  package static var scalarsFile: String { "state.json" }

  /// The tensors' file of save `saveID`.
  package static func tensorsFile(saveID: String) -> String { "state-\(saveID).safetensors" }

  /// Whether `name` is a state's tensors file (the current one or a leftover).
  package static func isTensorsFile(_ name: String) -> Bool {
    name.hasPrefix("state-") && name.hasSuffix(".safetensors")
  }

  package var settings: Settings
  package var trainer: Trainer.State
  /// Images taken from the run's stream so far (`EpochOrder` position).
  package var imagesSeen: Int

  package init(settings: Settings, trainer: Trainer.State, imagesSeen: Int) {
    self.settings = settings
    self.trainer = trainer
    self.imagesSeen = imagesSeen
  }

  /// Format 1 (before data-parallel runs) kept a sequential data generator.
  static var format: Int { 2 }

  private struct Scalars: Codable {
    var format = RunState.format
    var saveID: String
    var step: Int
    var imagesSeen: Int
    var optimizerStep: Int
    /// Generator states as 16 hex digits (JSON numbers lose bits above 2⁵³ in many readers).
    var trainerRNG: String
    /// The tensors' file, beside this one.
    var tensors: String
    var settings: Settings

    enum CodingKeys: String, CodingKey {
      case format
      case saveID = "save_id"
      case step
      case imagesSeen = "images_seen"
      case optimizerStep = "optimizer_step"
      case trainerRNG = "trainer_rng"
      case tensors
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
      tensors: Self.tensorsFile(saveID: saveID), settings: settings)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    // A Codable struct of numbers and strings always encodes.
    let json = try! encoder.encode(scalars)
    return (data, json + Data("\n".utf8))
  }

  /// Saves the state in `folder` as save `saveID` (letters, digits, '-'), replacing the
  /// previous one only once the new one is complete.
  package func write(to folder: URL, saveID: String) throws(TrainingStateError) {
    let files: (tensors: Data, scalars: Data)
    do {
      files = try encoded(saveID: saveID)
    } catch {
      throw TrainingStateError("cannot encode the training state: \(error.description)")
    }
    let tensorsName = Self.tensorsFile(saveID: saveID)
    do throws(DistillationError) {
      try atomicWrite(files.tensors, to: folder.appendingPathComponent(tensorsName))
      try atomicWrite(files.scalars, to: folder.appendingPathComponent(Self.scalarsFile))
    } catch {
      throw TrainingStateError(error.description)
    }
    // Earlier saves' tensors, and the pieces of saves cut short.
    let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
    for name in names
    where (Self.isTensorsFile(name) && name != tensorsName)
      || (name.hasPrefix(".state") && name.contains(".partial-"))
    {
      try? FileManager.default.removeItem(at: folder.appendingPathComponent(name))
    }
  }

  /// Reads the state saved in `folder`.
  package static func read(from folder: URL) throws(TrainingStateError) -> RunState {
    let jsonURL = folder.appendingPathComponent(scalarsFile)
    guard FileManager.default.fileExists(atPath: jsonURL.path) else {
      throw TrainingStateError("\(folder.path) has no saved training state (\(scalarsFile))")
    }
    let scalars: Scalars
    do {
      let data = try Data(contentsOf: jsonURL)
      let version = try JSONDecoder().decode(StateFormat.self, from: data)
      guard version.format == format else {
        throw TrainingStateError(
          version.format < format
            ? "\(jsonURL.path) was saved by an earlier evsam whose runs draw their data "
              + "differently; it cannot be continued exactly (start a new run from its model.pt)"
            : "\(jsonURL.path): unknown state format \(version.format) (a later evsam?)")
      }
      scalars = try JSONDecoder().decode(Scalars.self, from: data)
    } catch let error as TrainingStateError {
      throw error
    } catch {
      throw TrainingStateError("\(jsonURL.path) is not a training state: \(error)")
    }
    guard Self.isTensorsFile(scalars.tensors), !scalars.tensors.contains("/") else {
      throw TrainingStateError("\(jsonURL.path) names no state tensors file")
    }
    let tensorsURL = folder.appendingPathComponent(scalars.tensors)
    guard let trainerRNG = UInt64(scalars.trainerRNG, radix: 16) else {
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
    return RunState(settings: scalars.settings, trainer: trainer, imagesSeen: scalars.imagesSeen)
  }
}

/// The first thing read from a saved state: which format the rest is in.
private struct StateFormat: Decodable { var format: Int }

/// The state of an `evsam train` run.
package typealias TrainingState = RunState<RunSettings>

/// The state of an `evsam distill` run (its trainer state holds the encoder's tensors only).
package typealias DistillationState = RunState<DistillationSettings>

/// A saved state that cannot be used, in one line naming the file.
package struct TrainingStateError: Error, CustomStringConvertible, Equatable {
  package let description: String
  package init(_ description: String) { self.description = description }
}
