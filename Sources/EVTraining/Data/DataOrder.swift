import EVTensor

/// Which images train and which validate: a shuffle of all of them by the seed, the first
/// `fraction` (rounded, at least one when the fraction is above 0) validating. Both lists are
/// kept in dataset order, so the split depends only on the seed and the number of images.
package struct DataSplit: Sendable, Equatable {
  package let train: [Int]
  package let validation: [Int]

  package init(count: Int, validationFraction fraction: Double, seed: UInt64)
    throws(TrainingDataError)
  {
    precondition(fraction >= 0 && fraction < 1, "validation fraction \(fraction)")
    let wanted = fraction > 0 ? max(1, Int((fraction * Double(count)).rounded())) : 0
    guard wanted < count else {
      throw TrainingDataError(
        "--val-fraction \(fraction) of \(count) images leaves none to train on")
    }
    var rng = SplitMix64(seed: seed ^ 0x5EED_0000_5A11_7000)
    let shuffled = Array(0..<count).shuffled(using: &rng)
    validation = shuffled.prefix(wanted).sorted()
    train = shuffled.dropFirst(wanted).sorted()
  }
}

/// The order training visits its images: a fresh shuffle of them every epoch, made from the
/// seed and the epoch's number alone, so any position in the run can be found again without
/// replaying the ones before it (`--resume` stores only the position). Batches run across
/// epoch boundaries.
package struct EpochOrder: Sendable {
  package let count: Int
  package let seed: UInt64
  private var epoch = -1
  private var permutation: [Int] = []

  package init(count: Int, seed: UInt64) {
    precondition(count > 0, "EpochOrder: no images")
    self.count = count
    self.seed = seed
  }

  /// The image (an index among `count`) at `position` in the run's stream of images.
  package mutating func image(at position: Int) -> Int {
    let e = position / count
    if e != epoch {
      var rng = SplitMix64(seed: seed ^ 0x0E90_C400_0000_0000 &+ UInt64(e))
      permutation = Array(0..<count).shuffled(using: &rng)
      epoch = e
    }
    return permutation[position % count]
  }
}
