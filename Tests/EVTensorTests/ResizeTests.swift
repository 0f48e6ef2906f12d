import EVTensor
import Testing

@Suite struct ResizeTests {
  struct ResizeCase: CustomTestStringConvertible, Sendable {
    let input: [Int], height: Int, width: Int
    var testDescription: String { "\(input) → \(height)×\(width)" }
  }

  static let cases: [ResizeCase] = [
    ResizeCase(input: [1, 1, 2, 2], height: 4, width: 4),
    ResizeCase(input: [1, 3, 5, 7], height: 13, width: 9),  // up, odd factors
    ResizeCase(input: [2, 2, 16, 16], height: 64, width: 64),  // the neck's 4× upsampling
    ResizeCase(input: [1, 2, 17, 23], height: 5, width: 7),  // down to odd sizes
    ResizeCase(input: [1, 1, 9, 4], height: 3, width: 11),  // down one axis, up the other
    ResizeCase(input: [1, 2, 7, 6], height: 7, width: 6),  // same size
    ResizeCase(input: [1, 1, 1, 1], height: 3, width: 2),
    ResizeCase(input: [1, 3, 64, 64], height: 255, width: 257),
    ResizeCase(input: [1, 1, 256, 256], height: 1024, width: 1024),  // one mask, split by rows
    ResizeCase(input: [1, 1, 300, 451], height: 97, width: 1000),
  ]

  @Test(arguments: cases)
  func bicubicMatchesReference(_ c: ResizeCase) {
    let x = Tensor.random(c.input, seed: 501, in: -2...2)
    expectClose(
      resizeBicubic(x, height: c.height, width: c.width),
      Reference.resizeBicubic(x, height: c.height, width: c.width), c.testDescription)
  }

  @Test(arguments: cases)
  func bilinearMatchesReference(_ c: ResizeCase) {
    let x = Tensor.random(c.input, seed: 502, in: -2...2)
    expectClose(
      resizeBilinear(x, height: c.height, width: c.width),
      Reference.resizeBilinear(x, height: c.height, width: c.width), c.testDescription)
  }

  @Test func sameSizeIsIdentity() {
    let x = Tensor.random([2, 3, 7, 5], seed: 503)
    expectIdentical(resizeBilinear(x, height: 7, width: 5), x)
    expectIdentical(resizeBicubic(x, height: 7, width: 5), x)
  }

  /// upsample_bilinear2d of [[1, 2], [3, 4]] to 4×4 (align_corners=False): source coordinates
  /// −0.25, 0.25, 0.75, 1.25; the negative one clamps to 0, the last row/column clamps at the edge.
  @Test func bilinearKnownValues() {
    let x = Tensor(shape: [1, 1, 2, 2], storage: [1, 2, 3, 4])
    let y = resizeBilinear(x, height: 4, width: 4)
    let expected: [Float] = [
      1.0, 1.25, 1.75, 2.0,
      1.5, 1.75, 2.25, 2.5,
      2.5, 2.75, 3.25, 3.5,
      3.0, 3.25, 3.75, 4.0,
    ]
    #expect(y.storage == expected)
    // Halving a ramp samples at source 0.5 and 2.5.
    let ramp = Tensor(shape: [1, 1, 1, 4], storage: [0, 1, 2, 3])
    #expect(resizeBilinear(ramp, height: 1, width: 2).storage == [0.5, 2.5])
  }

  /// upsample_bicubic2d of [[1, 2], [3, 4]] to 4×4, worked by hand. Scale 0.5; output 0 reads
  /// source −0.25 (floor −1, t = 0.75, taps −2…1 clamped to 0, 0, 0, 1), output 1 reads 0.25
  /// (floor 0, t = 0.25, taps −1…2 clamped to 0, 0, 1, 1). With A = −0.75 the cubic-convolution
  /// weights are W(1.75) = −0.03515625, W(0.75) = 0.26171875, W(0.25) = 0.87890625,
  /// W(1.25) = −0.10546875, so the 1-D interpolation matrix is M below (outputs 2, 3 mirror
  /// 1, 0), and the result is M·X·Mᵀ. Unlike bilinear, the negative coordinate is not clamped,
  /// so the corners overshoot (0.68359375 < 1): PyTorch prints 0.6836, 1.0156, 1.5625, 1.8945 …
  @Test func bicubicKnownValues() {
    let x = Tensor(shape: [1, 1, 2, 2], storage: [1, 2, 3, 4])
    let y = resizeBicubic(x, height: 4, width: 4)
    let m: [[Double]] = [
      [1.10546875, -0.10546875], [0.7734375, 0.2265625], [0.2265625, 0.7734375],
      [-0.10546875, 1.10546875],
    ]
    let xs: [[Double]] = [[1, 2], [3, 4]]
    for i in 0..<4 {
      for j in 0..<4 {
        var v = 0.0
        for a in 0..<2 { for b in 0..<2 { v += m[i][a] * xs[a][b] * m[j][b] } }
        #expect(abs(Double(y[0, 0, i, j]) - v) <= 1e-6, "(\(i), \(j))")
      }
    }
    #expect(abs(y[0, 0, 0, 0] - 0.68359375) <= 1e-6)
    let printed: [Float] = [0.6836, 1.0156, 1.5625, 1.8945]
    for j in 0..<4 { #expect(abs(y[0, 0, 0, j] - printed[j]) <= 1e-4) }
  }
}
