import Foundation

/// One line of a run's `log.jsonl`: the step's loss, learning rate and speed, and the
/// validation mIoU when the run validated after that step.
package struct TrainingLogRecord: Sendable, Equatable, Codable {
  package var step: Int
  package var loss: Double
  package var lr: Double
  package var imagesPerSecond: Double
  package var validationMIoU: Double?

  enum CodingKeys: String, CodingKey {
    case step
    case loss
    case lr
    case imagesPerSecond = "images_per_s"
    case validationMIoU = "val_miou"
  }

  package init(
    step: Int, loss: Double, lr: Double, imagesPerSecond: Double, validationMIoU: Double? = nil
  ) {
    self.step = step
    self.loss = loss
    self.lr = lr
    self.imagesPerSecond = imagesPerSecond
    self.validationMIoU = validationMIoU
  }

  package var jsonLine: String {
    var line = String(
      format: "{\"step\": %d, \"loss\": %.6f, \"lr\": %.8g, \"images_per_s\": %.4f", step, loss,
      lr, imagesPerSecond)
    if let v = validationMIoU { line += String(format: ", \"val_miou\": %.6f", v) }
    return line + "}\n"
  }

  /// The records of `text` (a `log.jsonl`) up to and including `step`: what a resumed run
  /// keeps of its log (later lines belong to steps it will take again).
  package static func parse(_ text: String, through step: Int, file: String)
    throws(TrainingStateError) -> [TrainingLogRecord]
  {
    var out: [TrainingLogRecord] = []
    for (i, line) in text.split(separator: "\n").enumerated()
    where !line.trimmingCharacters(in: .whitespaces).isEmpty {
      let record: TrainingLogRecord
      do {
        record = try JSONDecoder().decode(TrainingLogRecord.self, from: Data(line.utf8))
      } catch {
        throw TrainingStateError("\(file), line \(i + 1): not a training log record")
      }
      if record.step <= step { out.append(record) }
    }
    return out
  }
}
