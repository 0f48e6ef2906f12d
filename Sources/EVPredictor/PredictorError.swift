/// Why a predictor call was refused. Every case describes itself in one line that names the
/// offending input, so a CLI can print it as is.
public enum PredictorError: Error, Sendable, Equatable, CustomStringConvertible {
  /// `predict` before `setImage` / `setEmbedding`.
  case noImageSet
  /// `setImage` on a predictor built without an image encoder.
  case noImageEncoder
  case embeddingShape([Int])
  case emptyImage(height: Int, width: Int)
  /// A point or box coordinate is NaN or infinite. `what` is e.g. "point 2" or "box 0".
  case nonFiniteCoordinate(what: String)
  /// A point or box corner off the image: outside 0…width × 0…height (pixels).
  case outsideImage(what: String, width: Int, height: Int)
  case boxValueCount(index: Int, count: Int)
  /// x1 < x0 or y1 < y0.
  case invertedBox(index: Int, box: [Double])
  case invalidLabel(index: Int, label: Int)
  case pointsWithoutLabels
  case labelsWithoutPoints
  case labelCountMismatch(points: Int, labels: Int)
  case maskInputShape(found: [Int], expected: [Int])
  case nonFiniteMaskInput
  case emptyBatch
  case batchSizeMismatch(boxes: Int, pointSets: Int)
  /// Batched point prompts must all have the same number of points (they share one tensor).
  case unequalPointCounts(first: Int, index: Int, count: Int)
  /// The image embedding (the encoder's output, or one given to `setEmbedding`) holds `count`
  /// NaN or infinite values.
  case nonFiniteEmbedding(count: Int)
  /// The mask decoder produced `count` NaN or infinite values in `what` ("IoU predictions",
  /// "low-res mask logits"): masks from them would be empty or noise under plausible scores.
  case nonFiniteOutput(what: String, count: Int)

  public var description: String {
    switch self {
    case .noImageSet:
      return "no image set: call setImage(_:) or setEmbedding(_:originalSize:) before predicting"
    case .noImageEncoder:
      return "this predictor has no image encoder: use setEmbedding(_:originalSize:) instead"
    case .embeddingShape(let shape):
      return
        "image embedding must be 1×256×64×64, got \(shape.map(String.init).joined(separator: "×"))"
    case .emptyImage(let h, let w):
      return "image size \(w)×\(h) is empty"
    case .nonFiniteCoordinate(let what):
      return "\(what) has a NaN or infinite coordinate"
    case .outsideImage(let what, let width, let height):
      return
        "\(what) lies outside the \(width)×\(height) image (coordinates are pixels, 0…width and 0…height)"
    case .boxValueCount(let index, let count):
      return "box \(index) has \(count) values; expected 4 (x0, y0, x1, y1)"
    case .invertedBox(let index, let box):
      return "box \(index) \(box) is inverted: need x0 ≤ x1 and y0 ≤ y1"
    case .invalidLabel(let index, let label):
      return "label \(index) is \(label); point labels must be 1 (foreground) or 0 (background)"
    case .pointsWithoutLabels:
      return "points were given without labels"
    case .labelsWithoutPoints:
      return "labels were given without points"
    case .labelCountMismatch(let points, let labels):
      return "\(points) points but \(labels) labels; give one label per point"
    case .maskInputShape(let found, let expected):
      return
        "mask input must be \(expected.map(String.init).joined(separator: "×")) low-res logits, got \(found.map(String.init).joined(separator: "×"))"
    case .nonFiniteMaskInput:
      return "mask input contains NaN or infinite values"
    case .emptyBatch:
      return "batch has no prompts"
    case .batchSizeMismatch(let boxes, let pointSets):
      return "batch has \(boxes) boxes but \(pointSets) point sets; they must pair up one to one"
    case .unequalPointCounts(let first, let index, let count):
      return
        "point set \(index) has \(count) points but set 0 has \(first); batched point sets must be the same length"
    case .nonFiniteEmbedding(let count):
      return
        "the image embedding has \(count) non-finite values (NaN/inf): the model's weights, or the embedding given, are broken"
    case .nonFiniteOutput(let what, let count):
      return
        "the mask decoder produced \(count) non-finite \(what) (NaN/inf): the model's weights are broken"
    }
  }
}
