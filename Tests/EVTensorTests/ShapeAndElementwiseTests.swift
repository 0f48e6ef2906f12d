import EVTensor
import Testing

@Suite struct ShapeAndElementwiseTests {
  @Test func elementwiseMatchesReference() {
    // Large enough to be split across threads.
    let a = Tensor.random([3, 50_001], seed: 601)
    let b = Tensor.random([3, 50_001], seed: 602)
    expectIdentical(a + b, Reference.add(a, b))
    expectIdentical(a - b, Reference.subtract(a, b))
    expectIdentical(a * b, Reference.multiply(a, b))
    expectIdentical(a * 0.37, Reference.multiply(a, 0.37))
    var c = a
    addInPlace(&c, b)
    expectIdentical(c, Reference.add(a, b))
    let small = Tensor(shape: [2], storage: [1, 2])
    #expect((small + small).storage == [2, 4])
  }

  @Test(arguments: [[2, 3, 4, 5], [1, 300, 33, 17], [3, 2]])
  func addChannelBiasMatchesReference(_ shape: [Int]) {
    let x = Tensor.random(shape, seed: 611)
    let v = Tensor.random([shape[1]], seed: 612)
    expectIdentical(addChannelBias(x, v), Reference.addChannelBias(x, v))
  }

  @Test func pad2dMatchesReference() {
    let x = Tensor.random([2, 3, 5, 7], seed: 621)
    for (t, b, l, r) in [(0, 0, 0, 0), (1, 2, 3, 4), (0, 3, 0, 1), (2, 0, 5, 0)] {
      for value: Float in [0, -1.5] {
        expectIdentical(
          pad2d(x, top: t, bottom: b, left: l, right: r, value: value),
          Reference.pad2d(x, top: t, bottom: b, left: l, right: r, value: value),
          "pad \(t) \(b) \(l) \(r) value \(value)")
      }
    }
    let big = Tensor.random([1, 64, 40, 40], seed: 622)
    expectIdentical(
      pad2d(big, top: 0, bottom: 24, left: 0, right: 24),
      Reference.pad2d(big, top: 0, bottom: 24, left: 0, right: 24))
  }

  @Test func concatSplitSliceMatchReference() {
    let a = Tensor.random([2, 3, 4], seed: 631)
    let b = Tensor.random([2, 5, 4], seed: 632)
    let c = Tensor.random([2, 1, 4], seed: 633)
    expectIdentical(concat([a, b, c], axis: 1), Reference.concat([a, b, c], axis: 1))
    expectIdentical(concat([a, a], axis: 0), Reference.concat([a, a], axis: 0))
    expectIdentical(concat([a, a, a], axis: -1), Reference.concat([a, a, a], axis: -1))
    let joined = concat([a, b, c], axis: 1)
    let parts = split(joined, sizes: [3, 5, 1], axis: 1)
    expectIdentical(parts[0], a)
    expectIdentical(parts[1], b)
    expectIdentical(parts[2], c)
    let referenceParts = Reference.split(joined, sizes: [2, 0, 7], axis: -2)
    for (p, q) in zip(split(joined, sizes: [2, 0, 7], axis: -2), referenceParts) {
      expectIdentical(p, q)
    }
    for axis in 0..<3 {
      let range = 1..<min(3, joined.shape[axis])
      expectIdentical(
        slice(joined, axis: axis, range: range), Reference.slice(joined, axis: axis, range: range),
        "axis \(axis)")
    }
  }

  @Test(arguments: [
    ([2, 3, 4], [0, 2, 1]), ([2, 3, 4], [2, 1, 0]), ([2, 3, 4], [1, 0, 2]),
    ([2, 3, 4, 5], [0, 2, 3, 1]), ([2, 3, 4, 5], [0, 3, 1, 2]),
    ([3, 1, 4, 2, 5], [4, 2, 0, 3, 1]),
    ([7, 9], [1, 0]), ([4, 5], [0, 1]), ([1, 64, 32, 32], [0, 2, 3, 1]),
    // Tiled transposes with ragged tiles, size-1 dimensions, and merged dimension runs.
    ([2, 45, 70], [0, 2, 1]), ([3, 1, 37, 1, 50], [1, 4, 3, 2, 0]), ([2, 33, 5, 7], [0, 2, 3, 1]),
    ([2, 6, 35, 3], [2, 3, 0, 1]), ([1, 1, 1], [2, 0, 1]), ([5, 1, 3], [1, 0, 2]),
  ])
  func permuteMatchesReference(_ shape: [Int], _ perm: [Int]) {
    let x = Tensor.random(shape, seed: 641)
    expectIdentical(permute(x, perm), Reference.permute(x, perm), "\(shape) by \(perm)")
  }
}
