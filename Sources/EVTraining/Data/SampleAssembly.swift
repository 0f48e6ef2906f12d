import EVTensor

extension TrainingSample {
  /// A training image as the official data provider hands it to the model: `masksPerImage`
  /// masks chosen (`selectMasks`), flipped with p ½, resized with its long side to `side`,
  /// normalised and padded. Draws from `rng` in that order.
  package static func training(
    _ image: LoadedImage, masksPerImage: Int, side: Int, using rng: inout some RandomNumberGenerator
  ) -> TrainingSample {
    let picked = selectMasks(count: image.masks.count, wanted: masksPerImage, using: &rng)
    var sample = assemble(image, picked: picked)
    if Double.random(in: 0..<1, using: &rng) >= 0.5 {
      sample = SampleTransforms.flipHorizontally(sample)
    }
    sample = SampleTransforms.resizeLongestSide(sample, target: side)
    return SampleTransforms.normalizeAndPad(sample, target: side)
  }

  /// A validation image as the official provider makes it: the masks of
  /// `validationMasks(count:wanted:)`, no flip, resized, normalised and padded.
  package static func validation(_ image: LoadedImage, masks wanted: Int, side: Int)
    -> TrainingSample
  {
    let picked = validationMasks(count: image.masks.count, wanted: wanted)
    let sample = SampleTransforms.resizeLongestSide(assemble(image, picked: picked), target: side)
    return SampleTransforms.normalizeAndPad(sample, target: side)
  }

  /// The picked masks decoded to 0/1 planes, with their boxes (and the boxes' corners as the
  /// points, which training does not use: point prompts are drawn from the masks).
  private static func assemble(_ image: LoadedImage, picked: [Int]) -> TrainingSample {
    var masks: [Float] = []
    masks.reserveCapacity(picked.count * image.height * image.width)
    var boxes: [[Float]] = []
    for i in picked {
      masks += image.masks[i].decodeRowMajor().map { Float($0) }
      let b = image.boxes[i]
      boxes.append([Float(b.x), Float(b.y), Float(b.width), Float(b.height)])
    }
    return TrainingSample(
      image: image.planes, masks: masks, points: boxes.map { [$0[0], $0[1]] }, boxes: boxes,
      height: image.height, width: image.width)
  }
}

/// The official validation set's masks of an image (`OnlineDataset` with `train=False`): the
/// first `wanted` when there are more, otherwise ⌊wanted/n⌋ copies of all of them in order
/// followed by the first `wanted mod n`.
package func validationMasks(count n: Int, wanted: Int) -> [Int] {
  precondition(n > 0 && wanted > 0, "validationMasks: \(n) annotations, \(wanted) wanted")
  if n > wanted { return Array(0..<wanted) }
  return (0..<(wanted / n)).flatMap { _ in 0..<n } + Array(0..<(wanted % n))
}
