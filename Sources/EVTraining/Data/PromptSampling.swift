import EVTensor

/// The official data provider's choice of masks for an image: exactly `wanted` of them. With
/// more annotations, `wanted` drawn without replacement; with fewer, ⌊wanted/n⌋ full copies in
/// order, then `wanted mod n` distinct random ones.
package func selectMasks(
  count n: Int, wanted: Int = 64, using rng: inout some RandomNumberGenerator
)
  -> [Int]
{
  precondition(n > 0 && wanted > 0, "selectMasks: \(n) annotations, \(wanted) wanted")
  if n > wanted {
    var all = Array(0..<n)
    all.shuffle(using: &rng)
    return Array(all.prefix(wanted))
  }
  var pool = Array(0..<n)
  pool.shuffle(using: &rng)
  let copies = (0..<(wanted / n)).flatMap { _ in 0..<n }
  return copies + pool.prefix(wanted % n)
}

/// The prompts of one training image, as the official trainer draws them per image: the
/// masks' boxes with probability ½, otherwise `n` = 1…10 positive points per mask drawn
/// uniformly among its pixels (value > 0 in the soft resized mask; one `n` for the image),
/// falling back to boxes when a mask has fewer than `n` pixels.
package enum TrainingPrompts: Sendable, Equatable {
  /// XYXY boxes in the 1024 prompt frame, `[M, 4]`.
  case boxes(Tensor)
  /// Points `[M, n, 2]` in the 1024 prompt frame, all labelled 1.
  case points(Tensor)

  /// - Parameters:
  ///   - masks: M soft masks of `side × side` (the encoder's padded input).
  ///   - boxes: M XYWH boxes in the encoder's frame.
  ///   - kind: `.mixed` (the official coin flip), `.boxes` or `.points`.
  package static func draw(
    masks: [Float], side: Int, boxes: [[Float]], kind: Kind,
    using rng: inout some RandomNumberGenerator
  ) -> TrainingPrompts {
    let m = boxes.count
    let toPrompt = Float(1024) / Float(side)
    let boxTensor = TrainingPrompts.boxes(
      Tensor(
        shape: [m, 4],
        storage: boxes.flatMap { b in
          [b[0] * toPrompt, b[1] * toPrompt, (b[0] + b[2]) * toPrompt, (b[1] + b[3]) * toPrompt]
        }))
    let useBoxes: Bool
    switch kind {
    case .boxes: useBoxes = true
    case .points: useBoxes = false
    case .mixed: useBoxes = Double.random(in: 0..<1, using: &rng) >= 0.5
    }
    if useBoxes { return boxTensor }
    let n = Int(Double.random(in: 0..<1, using: &rng) * 10 + 1)
    var coords: [Float] = []
    coords.reserveCapacity(m * n * 2)
    let plane = side * side
    for k in 0..<m {
      var inside: [Int] = []
      for p in 0..<plane where masks[k * plane + p] > 0 { inside.append(p) }
      guard inside.count >= n else { return boxTensor }
      inside.shuffle(using: &rng)
      for p in inside.prefix(n) {
        coords += [Float(p % side) * toPrompt, Float(p / side) * toPrompt]
      }
    }
    return .points(Tensor(shape: [m, n, 2], storage: coords))
  }

  package enum Kind: String, Sendable, CaseIterable {
    case mixed, boxes, points
  }
}
